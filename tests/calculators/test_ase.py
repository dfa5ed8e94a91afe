"""The ASE calculator: finite-difference forces and stress, Verlet-skin reuse, NVE drift, plugin, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import FiniteDifferenceCalculator
from ase.calculators.test import calculate_numerical_forces
from ase.md.verlet import VelocityVerlet
from ase.units import fs, kB

import zoo
from zoo.calculators import ModelTaskError, ZooCalculator
from zoo.graph import GraphError

ELEMENTS = [1, 8, 29, 79]


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(0)
    return zoo.create_model("egnn-potential", hidden_nf=16, n_layers=2, cutoff=4.5, elements=ELEMENTS).double().eval()


def rattled_bulk(seed: int = 0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.65).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_forces_are_minus_the_energy_gradient(potential):
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(atoms, "O", 1.6, "fcc")
    atoms.rattle(0.05, seed=1)
    atoms.calc = zoo.calculator(potential)
    forces = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, 1e-5)
    assert np.abs(forces - numeric).max() <= 1e-6


def test_stress_equals_finite_strain_differences(potential):
    atoms = rattled_bulk()
    atoms.calc = zoo.calculator(potential)
    stress = atoms.get_stress()
    numeric = FiniteDifferenceCalculator(atoms.calc, eps_strain=1e-5).get_stress(atoms)
    assert np.abs(stress - numeric).max() <= 1e-7
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)


def test_skin_reuse_gives_the_fresh_result(potential):
    atoms = rattled_bulk()
    reused = zoo.calculator(potential, skin=1.0)
    fresh = zoo.calculator(potential, skin=0.0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        reused.calculate(atoms, ["energy", "forces"], ["positions"])
        fresh.calculate(atoms, ["energy", "forces"], ["positions"])
        assert reused.results["energy"] == pytest.approx(fresh.results["energy"], abs=1e-12)
        assert np.abs(reused.results["forces"] - fresh.results["forces"]).max() < 1e-12
    assert reused.neighbor_list_builds < fresh.neighbor_list_builds == 6


def test_nve_energy_drift(potential):
    """1,000 velocity-Verlet steps of 0.5 fs at 300 K: total energy drift below 1e-6 eV/atom (measured 1.3e-9)."""
    atoms = bulk("Cu", "fcc", a=3.65).repeat((2, 2, 2))
    atoms.calc = zoo.calculator(potential)
    kinetic = np.sqrt(300 * kB / atoms.get_masses())[:, None]  # Maxwell-Boltzmann velocities at 300 K
    atoms.set_velocities(kinetic * np.random.default_rng(0).normal(size=(len(atoms), 3)))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * fs, logfile=None)
    totals = []
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dynamics.run(1000)
    drift = (max(totals) - min(totals)) / len(atoms)
    assert drift < 1e-6, drift


def test_per_atom_energies_sum_to_the_energy(potential):
    atoms = rattled_bulk()
    atoms.calc = zoo.calculator(potential)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


def test_isolated_atom_has_an_energy(potential):
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]])
    atoms.calc = zoo.calculator(potential)
    assert np.isfinite(atoms.get_potential_energy())
    assert np.allclose(atoms.get_forces(), 0.0)


def test_ase_plugin_lists_zoo():
    plugins = pytest.importorskip("ase._4.plugins")
    calculators = plugins.PluginCollection.from_entry_points().calculators
    (plugin,) = [p for p in calculators if p.name == "zoo"]
    assert plugin.implementation is ZooCalculator


@pytest.mark.parametrize(
    ("atoms", "error", "message"),
    [
        (Atoms("CuAg", positions=[[0, 0, 0], [0, 0, 2.5]]), GraphError, "not trained on element.*Ag"),
        (Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]]), GraphError, "overlap"),
        (Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), GraphError, "NaN"),
        (Atoms("Cu", cell=np.zeros((3, 3)), pbc=True), GraphError, "cell"),
    ],
)
def test_bad_structures(potential, atoms, error, message):
    atoms.calc = zoo.calculator(potential)
    with pytest.raises(error, match=message):
        atoms.get_potential_energy()


def test_stress_of_a_molecule_is_refused(potential):
    atoms = Atoms("CuO", positions=[[0, 0, 0], [0, 0, 1.9]])
    atoms.calc = zoo.calculator(potential)
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        atoms.get_stress()


def test_model_of_the_wrong_task():
    with pytest.raises(ModelTaskError, match="not an interatomic potential"):
        zoo.calculator(zoo.create_model("egnn-qm9", hidden_nf=8, n_layers=1))
    with pytest.raises(ModelTaskError, match="serves task 'potential'"):
        zoo.calculator(zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1), task="property")


def test_equiformer_v2_through_the_calculator_matches_its_forward():
    """A direct-force model: the calculator builds the same graph (cutoff, 20 neighbours) as radius_graph."""
    from zoo.graph import from_ase, radius_graph

    torch.manual_seed(0)
    args = {"num_layers": 1, "sphere_channels": 8, "attn_hidden_channels": 8, "num_heads": 2, "attn_alpha_channels": 4}
    args |= {"attn_value_channels": 4, "ffn_hidden_channels": 8, "lmax": 2, "mmax": 1, "edge_channels": 8}
    model = zoo.create_model("equiformer_v2", max_radius=5.0, **args).double().eval()
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(atoms, "O", 1.6, "fcc")
    atoms.rattle(0.05, seed=3)
    atoms.calc = zoo.calculator(model)
    graph = radius_graph(from_ase(atoms, dtype=torch.float64), 5.0, max_neighbors=20)
    expected = model(graph)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"].item(), abs=1e-10)
    assert np.abs(atoms.get_forces() - expected["forces"].detach().numpy()).max() < 1e-10
    with pytest.raises(PropertyNotImplementedError, match="no stress"):
        atoms.get_stress()


@pytest.mark.parametrize("strict", [True, False])
def test_neighbour_convention_of_the_model_is_used_everywhere(strict, tmp_path):
    """An OC22-style model (``enforce_max_neighbors_strictly=False``) gets its non-strict neighbour list from the
    calculator, zoo.predict, the RadiusGraph transform and the trainer alike."""
    import ase.io
    from ase.build import bulk

    from zoo.datasets.transforms import RadiusGraph
    from zoo.graph import from_ase, radius_graph
    from zoo.train.data import load_graphs, read_structures

    torch.manual_seed(0)
    args = {"num_layers": 1, "sphere_channels": 8, "attn_hidden_channels": 8, "num_heads": 2, "attn_alpha_channels": 4}
    args |= {"attn_value_channels": 4, "ffn_hidden_channels": 8, "lmax": 2, "mmax": 1, "edge_channels": 8}
    model = zoo.create_model(
        "equiformer_v2", max_radius=6.0, max_neighbors=8, enforce_max_neighbors_strictly=strict, **args
    )
    model = model.double().eval()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # perfect crystal: 12 nearest neighbours tie at the 8th
    expected_graph = radius_graph(
        from_ase(atoms, dtype=torch.float64), 6.0, max_neighbors=8, strict_max_neighbors=strict
    )
    assert (expected_graph.edge_index.shape[1] == 4 * 8) is strict
    expected = model(expected_graph)

    atoms.calc = zoo.calculator(model)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"].item(), abs=1e-10)
    (predicted,) = zoo.predict(model, [atoms.copy()])
    assert predicted["energy"] == pytest.approx(expected["energy"].item(), abs=1e-10)

    metadata = model.metadata
    transform = RadiusGraph(6.0, metadata["max_neighbors"], metadata["strict_max_neighbors"])
    assert torch.equal(transform(from_ase(atoms, dtype=torch.float64)).edge_index, expected_graph.edge_index)
    ase.io.write(tmp_path / "cu.extxyz", atoms)
    (graph,) = load_graphs(
        read_structures([tmp_path / "cu.extxyz"]), 6.0, dtype=torch.float64, labels=(), max_neighbors=8,
        strict_max_neighbors=strict,
    )  # fmt: skip
    assert torch.equal(graph.edge_index, expected_graph.edge_index)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_forces_skip_weight_gradients_and_leave_the_model_trainable(potential, backend):
    """Inside the calculator no parameter requires a gradient (so the fused kernels' backward computes none for
    the weights); the same forces as with trainable parameters; afterwards, and after an error, every parameter
    that required gradients does again."""
    from zoo.calculators.ase import run_potential
    from zoo.graph import from_ase, radius_graph
    from zoo.kernels import set_backend

    set_backend(potential, backend)
    graph = radius_graph(from_ase(rattled_bulk(), dtype=torch.float64), 4.5)
    seen = []
    hook = potential.register_forward_pre_hook(lambda module, args: seen.append(
        [p.requires_grad for p in module.parameters()]))  # fmt: skip
    try:
        frozen = run_potential(potential, graph)
    finally:
        hook.remove()
    assert seen and not any(seen[0])
    assert all(p.requires_grad for p in potential.parameters())
    expected = potential(graph)
    torch.testing.assert_close(frozen["forces"], expected["forces"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(frozen["energy"], expected["energy"], rtol=1e-12, atol=1e-14)
    with pytest.raises(GraphError):
        run_potential(potential, graph.__class__.build(graph.pos, graph.z))  # no edges: refused inside
    assert all(p.requires_grad for p in potential.parameters())
    set_backend(potential, None)
