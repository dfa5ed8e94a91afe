"""from_ase / to_ase round trips."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.stress import voigt_6_to_full_3x3_stress

from zoo.graph import AtomsGraph, GraphError, batch_graphs, from_ase, radius_graph, to_ase


def labelled_slab() -> ase.Atoms:
    rng = np.random.default_rng(0)
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    atoms.info.pop("adsorbate_info")
    atoms.cell[1] += [0.3, 0.0, 0.0]
    atoms.set_tags(rng.integers(0, 3, len(atoms)))
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    atoms.info["charge"] = -1
    atoms.info["spin"] = 2
    atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * 0.01)
    atoms.calc = SinglePointCalculator(
        atoms, energy=-12.5, forces=rng.normal(size=(len(atoms), 3)), stress=rng.normal(size=6)
    )
    return atoms


def assert_same_atoms(a: ase.Atoms, b: ase.Atoms) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-12, rtol=0)
    np.testing.assert_allclose(a.cell.array, b.cell.array, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    np.testing.assert_array_equal(a.get_tags(), b.get_tags())


def test_round_trip_all_fields() -> None:
    atoms = labelled_slab()
    graph = from_ase(atoms, dtype=torch.float64)
    assert graph.pbc.tolist() == [[True, True, False]]
    assert graph.fixed.tolist() == [True] * 4 + [False] * 8
    assert graph.charge.tolist() == [-1] and graph.spin.tolist() == [2]
    assert graph.energy.tolist() == [-12.5]
    np.testing.assert_allclose(graph.vel.numpy(), atoms.get_velocities())
    np.testing.assert_allclose(graph.stress[0].numpy(), voigt_6_to_full_3x3_stress(atoms.get_stress()))

    back = to_ase(graph)
    assert isinstance(back, ase.Atoms)
    assert_same_atoms(atoms, back)
    assert back.info["charge"] == -1 and back.info["spin"] == 2
    assert isinstance(back.constraints[0], FixAtoms)
    np.testing.assert_array_equal(back.constraints[0].get_indices(), [0, 1, 2, 3])
    np.testing.assert_allclose(back.get_velocities(), atoms.get_velocities(), atol=1e-12)
    assert back.get_potential_energy() == pytest.approx(-12.5)
    np.testing.assert_allclose(back.get_forces(apply_constraint=False), atoms.get_forces(apply_constraint=False))
    np.testing.assert_allclose(back.get_stress(), atoms.get_stress(), atol=1e-12)


def test_molecule_defaults() -> None:
    graph = from_ase(molecule("CH3CH2OH"))
    assert graph.pos.dtype == torch.get_default_dtype()
    assert torch.equal(graph.cell, torch.zeros(1, 3, 3))
    assert graph.pbc.tolist() == [[False, False, False]]
    assert not graph.fixed.any() and not graph.tags.any()
    for absent in ("vel", "charge", "spin", "energy", "forces", "stress"):
        assert absent not in graph
    back = to_ase(graph)
    assert back.calc is None and not back.constraints and "charge" not in back.info


def test_dtype_follows_default_at_call_time() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert from_ase(molecule("H2O")).pos.dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)
    assert from_ase(molecule("H2O"), dtype=torch.float32).cell.dtype == torch.float32


def test_labels_from_info_and_arrays_with_custom_keys() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["REF_energy"] = -3.0
    atoms.arrays["REF_forces"] = np.ones((4, 3))
    stress = np.arange(9.0).reshape(3, 3)
    atoms.info["REF_stress"] = stress + stress.T
    graph = from_ase(
        atoms, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress", dtype=torch.float64
    )
    assert graph.energy.tolist() == [-3.0]
    assert torch.equal(graph.forces, torch.ones(4, 3, dtype=torch.float64))
    np.testing.assert_array_equal(graph.stress[0].numpy(), stress + stress.T)


def test_stale_calculator_results_are_ignored() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    atoms.get_forces()
    assert "energy" in from_ase(atoms)
    atoms.positions[0, 0] += 0.1
    graph = from_ase(atoms)
    assert "energy" not in graph and "forces" not in graph


def test_extxyz_file_round_trip(tmp_path) -> None:
    frames = [labelled_slab(), molecule("H2O")]
    frames[1].calc = SinglePointCalculator(frames[1], energy=-1.5, forces=np.zeros((3, 3)))
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames)
    read = ase.io.read(path, index=":")
    slab = from_ase(read[0], dtype=torch.float64)
    assert slab.energy.tolist() == [-12.5]
    np.testing.assert_allclose(slab.forces.numpy(), frames[0].get_forces(apply_constraint=False), atol=1e-6)
    assert slab.fixed.sum() == 4 and slab.charge.tolist() == [-1]
    water = from_ase(read[1], dtype=torch.float64)
    assert water.energy.tolist() == [-1.5] and "stress" not in water


def test_batch_round_trip() -> None:
    atoms = [bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.64, cubic=True), molecule("CH4")]
    for i, a in enumerate(atoms):
        a.calc = SinglePointCalculator(a, energy=float(i), forces=np.full((len(a), 3), float(i)))
    batch = radius_graph(batch_graphs([from_ase(a, dtype=torch.float64) for a in atoms]), 3.0)
    back = to_ase(batch)
    assert isinstance(back, list) and len(back) == 3
    for original, converted in zip(atoms, back, strict=True):
        assert_same_atoms(original, converted)
        assert converted.get_potential_energy() == original.get_potential_energy()
        np.testing.assert_array_equal(converted.get_forces(), original.get_forces())


def test_to_ase_needs_atomic_numbers() -> None:
    with pytest.raises(GraphError, match="needs atomic numbers z"):
        to_ase(AtomsGraph.build(torch.rand(3, 3), x=torch.rand(3, 4)))


def test_bad_inputs() -> None:
    atoms = molecule("H2O")
    atoms.info["charge"] = 0.5
    with pytest.raises(GraphError, match=r"atoms.info\['charge'\] = 0.5 is not an integer"):
        from_ase(atoms)
    atoms = molecule("H2O")
    atoms.info["stress"] = np.zeros(4)
    with pytest.raises(GraphError, match=r"stress must be Voigt \[6\] or \[3, 3\]"):
        from_ase(atoms)
    with pytest.raises(GraphError, match="empty structure"):
        from_ase(ase.Atoms())
    with pytest.raises(GraphError, match="unknown element"):
        from_ase(ase.Atoms("X", positions=[[0.0, 0.0, 0.0]]))
    with pytest.raises(GraphError, match="pbc is True along cell vector 0"):
        from_ase(ase.Atoms("H", positions=[[0.0, 0.0, 0.0]], pbc=True))
