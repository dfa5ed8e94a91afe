"""What every dataset of zoo shares: errors that name file and frame, label keys, ``ase.Atoms`` -> graph.

A dataset of zoo is a map-style :class:`torch.utils.data.Dataset` (or, for streams, an iterable one) whose items
are :class:`~zoo.graph.AtomsGraph` objects, units Å, eV, eV/Å, eV/Å³, e. Every dataset knows where each item
comes from (:meth:`StructureDataset.where`, ``"file:frame"``), so a bad frame is reported as
``"train.extxyz:17: forces contain NaN or inf at atoms [3]"`` and :func:`check_dataset` lists every bad frame
of a dataset in one error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ase
import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.graph import AtomsGraph, GraphError, from_ase

__all__ = [
    "DatasetError",
    "FrameError",
    "LabelKeys",
    "StructureDataset",
    "Transform",
    "atoms_to_graph",
    "check_dataset",
    "check_graph",
]

Transform = Callable[[AtomsGraph], AtomsGraph]

# Fields checked for NaN/inf and their expected shapes, per atom (N) or per graph.
_FLOAT_FIELDS = ("pos", "cell", "energy", "forces", "stress", "charges", "vel")


class FrameError(ValueError):
    """One structure that cannot be used; the message starts with ``file:frame``.

    Attributes:
        where: ``"file:frame"`` (or ``"file"`` for a problem with the whole file).
        problem: what is wrong, without the location.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class DatasetError(ValueError):
    """A dataset with problems; the message lists every bad frame, one ``file:frame: problem`` per line.

    Attributes:
        problems: the :class:`FrameError` of every bad frame.
    """

    def __init__(self, problems: Sequence[FrameError], total: int | None = None) -> None:
        self.problems = list(problems)
        of = f" of {total}" if total is not None else ""
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} bad structure(s){of}; fix or remove them:\n{lines}")


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels of a structure are stored (the names differ between files: ``REF_energy``, ``dft_forces``).

    Each label is looked up in the calculator results of the atoms first (e.g. an extxyz file's
    ``SinglePointCalculator``), then in ``atoms.info`` (per structure) or ``atoms.arrays`` (per atom).

    Attributes:
        energy: total energy in eV, stored as ``energy [1]``.
        forces: forces in eV/Å, stored as ``forces [N, 3]``.
        stress: stress in eV/Å³, Voigt ``[6]`` or ``[3, 3]``, stored as ``stress [1, 3, 3]``.
        charges: per-atom partial charges in e, stored as ``charges [N]``.
        required: labels every structure must have (names among ``energy``, ``forces``, ``stress``,
            ``charges``); a structure without one is a bad frame.
    """

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    charges: str = "charges"
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.required) - {"energy", "forces", "stress", "charges"})
        if unknown:
            raise ValueError(f"required labels {unknown} are unknown; choose among energy, forces, stress, charges.")


def _label(atoms: ase.Atoms, key: str, per_atom: bool) -> object | None:
    calc = atoms.calc
    results = getattr(calc, "results", None)
    if results and key in results and not calc.check_state(atoms):
        return results[key]
    return atoms.arrays.get(key) if per_atom else atoms.info.get(key)


def atoms_to_graph(atoms: ase.Atoms, keys: LabelKeys | None = None, *, dtype: torch.dtype | None = None) -> AtomsGraph:
    """One structure as a graph, labels read under ``keys`` and checked (:func:`check_graph`).

    Fields: everything :func:`zoo.graph.from_ase` reads (positions, numbers, cell, pbc, tags, fixed, velocities,
    total charge and spin, energy, forces, stress), plus ``charges [N]`` (e) when present.

    Args:
        atoms: the structure.
        keys: where the labels are; default :class:`LabelKeys` ``()``.
        dtype: float dtype of positions and labels (default ``torch.get_default_dtype()``).

    Raises:
        GraphError: a missing required label, a label of the wrong shape, NaN or inf anywhere, a bad structure.
    """
    keys = keys or LabelKeys()
    for name in keys.required:
        key = getattr(keys, name)
        if _label(atoms, key, per_atom=name in ("forces", "charges")) is None:
            where = "atoms.arrays" if name in ("forces", "charges") else "atoms.info"
            raise GraphError(f"missing {name}: no key {key!r} in the calculator results or {where}")
    forces = _label(atoms, keys.forces, per_atom=True)
    if forces is not None and np.shape(forces) != (len(atoms), 3):
        raise GraphError(f"forces ({keys.forces!r}) have shape {list(np.shape(forces))}, expected [{len(atoms)}, 3]")
    graph = from_ase(atoms, energy_key=keys.energy, forces_key=keys.forces, stress_key=keys.stress, dtype=dtype)
    charges = _label(atoms, keys.charges, per_atom=True)
    if charges is not None:
        charges = torch.as_tensor(np.array(charges, dtype=np.float64), dtype=graph.pos.dtype)
        if charges.shape != (len(atoms),):
            raise GraphError(f"charges ({keys.charges!r}) have shape {list(charges.shape)}, expected [{len(atoms)}]")
        graph.charges = charges
    check_graph(graph)
    return graph


def check_graph(graph: AtomsGraph) -> None:
    """Raise :class:`~zoo.graph.GraphError` if a float field of ``graph`` holds NaN or inf (naming field and atoms)."""
    for name in _FLOAT_FIELDS:
        value = graph.get(name) if name in graph else None
        if value is None or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        if name in ("forces", "vel", "charges"):
            rows = (~finite.reshape(value.shape[0], -1)).any(dim=1).nonzero().flatten()
            more = " ..." if rows.numel() > 10 else ""
            raise GraphError(f"{name} contain NaN or inf at atoms {rows[:10].tolist()}{more}")
        raise GraphError(f"{name} contains NaN or inf")


class StructureDataset(Dataset, ABC):
    """Base of the map-style datasets: ``dataset[i]`` is the :class:`~zoo.graph.AtomsGraph` of structure ``i``
    after ``transform``.

    Subclasses implement :meth:`__len__`, :meth:`get` (the graph before the transform) and :meth:`where`; any
    :class:`~zoo.graph.GraphError` raised while reading becomes a :class:`FrameError` naming file and frame.
    """

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def get(self, index: int) -> AtomsGraph:
        """The graph of structure ``index`` (0-based, already bounds-checked), before the transform."""

    @abstractmethod
    def where(self, index: int) -> str:
        """``"file:frame"`` of structure ``index``, for error messages."""

    def __getitem__(self, index: int) -> AtomsGraph:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"index {index} is out of range for a dataset of {length} structures")
        index = index % length
        try:
            graph = self.get(index)
            return self.transform(graph) if self.transform is not None else graph
        except GraphError as error:
            raise FrameError(self.where(index), str(error)) from error

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def num_atoms(self) -> np.ndarray:
        """``[len(self)]`` int64: atoms of each structure (subclasses answer without building graphs)."""
        return np.array([int(self.get(index).natoms[0]) for index in range(len(self))], dtype=np.int64)


def check_dataset(dataset: StructureDataset, indices: Iterable[int] | None = None) -> None:
    """Read every structure (or those at ``indices``) and raise one :class:`DatasetError` listing all bad ones."""
    problems: list[FrameError] = []
    indices = range(len(dataset)) if indices is None else list(indices)
    for index in indices:
        try:
            dataset[index]
        except FrameError as error:
            problems.append(error)
    if problems:
        raise DatasetError(problems, total=len(indices))
