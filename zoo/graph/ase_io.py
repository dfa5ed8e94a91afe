"""Conversion between :class:`ase.Atoms` and :class:`~zoo.graph.AtomsGraph`.

Units are ASE's: Å, eV, eV/Å, eV/Å³, and velocities in ASE units (:math:`\\sqrt{\\text{eV}/\\text{amu}}`,
i.e. Å per ASE time unit) exactly as :meth:`ase.Atoms.get_velocities` returns them.
"""

from __future__ import annotations

from typing import Any

import ase
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from torch_geometric.data import Batch, Data

from zoo.graph.atoms_graph import AtomsGraph, GraphError, unbatch_graphs

__all__ = ["from_ase", "to_ase"]


def from_ase(
    atoms: ase.Atoms,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    dtype: torch.dtype | None = None,
) -> AtomsGraph:
    """Build an :class:`~zoo.graph.AtomsGraph` from an :class:`ase.Atoms`.

    Read: positions, atomic numbers, cell, pbc, ``tags [N]`` and ``fixed [N]`` (always; from
    :class:`ase.constraints.FixAtoms`, other constraints are not carried), ``vel [N, 3]`` if the atoms have
    momenta, ``charge`` and ``spin`` from ``atoms.info`` if present (integers), and the labels
    ``energy [1]``, ``forces [N, 3]``, ``stress [1, 3, 3]`` if present.

    Each label is looked up first in the results of ``atoms.calc`` (if the calculator's results belong to
    these atoms, e.g. a :class:`~ase.calculators.singlepoint.SinglePointCalculator` from an extxyz file;
    nothing is computed), then in ``atoms.info`` (energy, stress) or ``atoms.arrays`` (forces), under the
    given key. Stress may be Voigt ``[6]`` (ASE order xx, yy, zz, yz, xz, xy) or ``[3, 3]``; it is stored as
    ``[1, 3, 3]``.

    Args:
        atoms: the structure.
        energy_key: key of the total energy (eV).
        forces_key: key of the forces (eV/Å).
        stress_key: key of the stress (eV/Å³).
        dtype: float dtype of positions, cell, velocities and labels; ``None`` means
            ``torch.get_default_dtype()`` at call time.

    Raises:
        GraphError: what :meth:`AtomsGraph.build` rejects, labels of the wrong shape, non-integer charge/spin.

    Example:
        >>> from ase.build import molecule
        >>> graph = from_ase(molecule("H2O"))
        >>> graph.z.tolist(), graph.pbc.tolist()
        ([8, 1, 1], [[False, False, False]])
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[constraint.get_indices()] = True
    fields: dict[str, Any] = {
        "tags": torch.as_tensor(atoms.get_tags(), dtype=torch.long),
        "fixed": torch.from_numpy(fixed),
    }
    if atoms.has("momenta"):
        fields["vel"] = torch.as_tensor(atoms.get_velocities())
    for name in ("charge", "spin"):
        if name in atoms.info:
            fields[name] = _integer(atoms.info[name], name)
    energy = _label(atoms, energy_key, atoms.info)
    if energy is not None:
        fields["energy"] = torch.as_tensor(np.asarray(energy, dtype=np.float64).reshape(-1))
    forces = _label(atoms, forces_key, atoms.arrays)
    if forces is not None:
        fields["forces"] = torch.as_tensor(np.asarray(forces, dtype=np.float64))
    stress = _label(atoms, stress_key, atoms.info)
    if stress is not None:
        fields["stress"] = torch.as_tensor(_full_stress(stress, stress_key))
    return AtomsGraph.build(
        torch.as_tensor(atoms.positions, dtype=dtype),
        torch.as_tensor(atoms.numbers, dtype=torch.long),
        cell=torch.as_tensor(atoms.cell.array, dtype=dtype),
        pbc=torch.as_tensor(atoms.pbc, dtype=torch.bool),
        **fields,
    )


def to_ase(graph: Data) -> ase.Atoms | list[ase.Atoms]:
    """Convert a graph back to :class:`ase.Atoms` (a batch gives a list), the inverse of :func:`from_ase`.

    Positions, numbers, cell and pbc are always written; when present also ``tags``, ``fixed`` (as
    :class:`FixAtoms`, only if any atom is fixed), ``vel`` (with ASE's default masses), ``charge`` and
    ``spin`` (into ``atoms.info``), and ``energy``/``forces``/``stress`` through a
    :class:`SinglePointCalculator` (stress as Voigt 6).

    Raises:
        GraphError: the graph has no atomic numbers ``z`` (a point cloud).
    """
    if isinstance(graph, Batch):
        return [_to_atoms(single) for single in unbatch_graphs(graph)]
    return _to_atoms(graph)


def _to_atoms(graph: Data) -> ase.Atoms:
    if "z" not in graph:
        raise GraphError("to_ase needs atomic numbers z; this graph has none (a point cloud?).")

    def array(name: str) -> np.ndarray:
        value = graph[name].detach().cpu()
        return value.double().numpy() if value.dtype.is_floating_point else value.numpy()

    atoms = ase.Atoms(
        numbers=array("z"),
        positions=array("pos"),
        cell=array("cell").reshape(3, 3),
        pbc=array("pbc").reshape(3),
    )
    if "tags" in graph:
        atoms.set_tags(array("tags"))
    if "fixed" in graph and bool(graph.fixed.any()):
        atoms.set_constraint(FixAtoms(mask=array("fixed")))
    if "vel" in graph:
        atoms.set_velocities(array("vel"))
    for name in ("charge", "spin"):
        if name in graph:
            atoms.info[name] = int(graph[name].reshape(()))
    results: dict[str, Any] = {}
    if "energy" in graph:
        results["energy"] = float(graph.energy.reshape(()))
    if "forces" in graph:
        results["forces"] = array("forces")
    if "stress" in graph:
        results["stress"] = full_3x3_to_voigt_6_stress(array("stress").reshape(3, 3))
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _label(atoms: ase.Atoms, key: str, fallback: dict[str, Any]) -> Any:
    """``key`` from the calculator's results if they belong to ``atoms``, else from ``fallback``, or None."""
    calc = atoms.calc
    results = getattr(calc, "results", None)
    if results and key in results and not calc.check_state(atoms):
        return results[key]
    return fallback.get(key)


def _full_stress(stress: Any, key: str) -> np.ndarray:
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (6,):
        return voigt_6_to_full_3x3_stress(stress)
    if stress.shape in ((3, 3), (9,)):
        return stress.reshape(3, 3)
    raise GraphError(f"{key} must be Voigt [6] or [3, 3] (eV/Å³), got shape {list(stress.shape)}.")


def _integer(value: Any, name: str) -> torch.Tensor:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise GraphError(f"atoms.info[{name!r}] = {value!r} is not a number.") from error
    if not number.is_integer():
        raise GraphError(
            f"atoms.info[{name!r}] = {value!r} is not an integer; zoo stores {name} as an integer (total "
            "charge in e, spin as an integer such as the multiplicity)."
        )
    return torch.tensor([int(number)], dtype=torch.long)
