"""Training data: structure files -> validated graphs with edges, and the deterministic batch order.

Every structure is checked before training starts and *all* problems are reported together, each with its file
and frame index (NaN or inf anywhere, a missing label the loss needs, an element the model does not know,
a label of the wrong shape), so a user fixes a data set in one pass instead of one crash per bad frame.

The batch order is a pure function of ``(seed, epoch)``: a run resumed at ``(epoch, batch)`` sees exactly the
batches the uninterrupted run would have seen, and ``P`` processes together see the same global batches as
one process (each takes a contiguous slice of every global batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from torch_geometric.data import Batch

from zoo.graph import AtomsGraph, GraphError, batch_graphs, from_ase, radius_graph

__all__ = [
    "GRAPH_DATASETS",
    "DataError",
    "Structure",
    "batch_indices",
    "collate",
    "load_graphs",
    "open_graph_dataset",
    "rank_slice",
    "read_structures",
    "validate_structures",
]


class DataError(ValueError):
    """A data set with problems; the message lists every bad frame with its file and index."""


@dataclass(frozen=True)
class Structure:
    """One frame of a structure file: where it came from and the atoms (with their labels)."""

    source: str
    index: int
    atoms: ase.Atoms

    @property
    def where(self) -> str:
        return f"{self.source}:{self.index}"


def _nbody(root: str, split: str, dtype: torch.dtype, **args: Any) -> Sequence[AtomsGraph]:
    from zoo.datasets.nbody import NBodyDataset

    return NBodyDataset(root, split, dtype=dtype, **args)


#: Data sets a training config can name in ``data.dataset.name``: ``opener(root, split, dtype, **args)``
#: returns an indexable sequence of graphs with their edges (no neighbour list is built for them).
GRAPH_DATASETS: dict[str, Callable[..., Sequence[AtomsGraph]]] = {"nbody": _nbody}


def open_graph_dataset(
    name: str, root: str, split: str, *, dtype: torch.dtype, args: dict[str, Any] | None = None
) -> Sequence[AtomsGraph]:
    """One split of the data set ``name`` (see :data:`GRAPH_DATASETS`); its ``files`` attribute, where present,
    lists the files it read.

    Raises:
        DataError: unknown name, or the data set cannot be opened (missing files, bad arguments); the message
            says what to change.
    """
    if name not in GRAPH_DATASETS:
        raise DataError(f"data.dataset.name {name!r} is not a graph data set; choose one of {sorted(GRAPH_DATASETS)}")
    try:
        return GRAPH_DATASETS[name](root, split, dtype, **(args or {}))
    except TypeError as exc:
        raise DataError(f"data.dataset.args do not fit the {name!r} data set: {exc}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open split {split!r} of the {name!r} data set in {root}: {exc}") from None


def read_structures(paths: Sequence[str | os.PathLike[str]]) -> list[Structure]:
    """Read every frame of every file with ``ase.io.read(path, index=":")``.

    Raises:
        DataError: missing or unreadable files (all of them listed).
    """
    structures: list[Structure] = []
    problems: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            problems.append(f"{path}: file not found")
            continue
        try:
            frames = ase.io.read(path, index=":")
        except (OSError, ValueError, KeyError, IndexError, StopIteration) as exc:
            problems.append(f"{path}: cannot be read by ase.io.read ({type(exc).__name__}: {exc})")
            continue
        if not frames:
            problems.append(f"{path}: holds no structures")
        structures.extend(Structure(str(path), index, atoms) for index, atoms in enumerate(frames))
    if problems:
        raise DataError("cannot read the data:\n" + "\n".join(f"  {p}" for p in problems))
    return structures


def _label(atoms: ase.Atoms, key: str, per_atom: bool) -> np.ndarray | None:
    """A label as ``from_ase`` reads it (calculator results first, then info/arrays), or ``None``."""
    calc = atoms.calc
    results = getattr(calc, "results", None)
    value = None
    if results and key in results and not calc.check_state(atoms):
        value = results[key]
    elif per_atom:
        value = atoms.arrays.get(key)
    else:
        value = atoms.info.get(key)
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([np.nan])


def _element_set(elements: Sequence[int | str] | None) -> set[int] | None:
    if elements is None:
        return None
    return {int(e) if not isinstance(e, str) else atomic_numbers[e] for e in elements}


def validate_structures(
    structures: Sequence[Structure],
    *,
    required: Sequence[str] = (),
    keys: dict[str, str] | None = None,
    elements: Sequence[int | str] | None = None,
) -> None:
    """Check every structure and raise one :class:`DataError` listing all problems.

    Args:
        structures: frames from :func:`read_structures`.
        required: labels the loss needs (``"energy"``, ``"forces"``, ``"stress"`` or other ``atoms.info`` keys).
        keys: label name -> key in the file (e.g. ``{"energy": "REF_energy"}``); default: the name itself.
        elements: atomic numbers or symbols the model knows; ``None`` accepts every element.

    Raises:
        DataError: the message has one line per problem, ``file:frame: what is wrong``.
    """
    keys = dict(keys or {})
    allowed = _element_set(elements)
    problems: list[str] = []
    for structure in structures:
        atoms, where = structure.atoms, structure.where
        natoms = len(atoms)
        if natoms == 0:
            problems.append(f"{where}: empty structure (0 atoms)")
            continue
        if not np.isfinite(atoms.positions).all():
            bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
            problems.append(f"{where}: positions are NaN or inf at atoms {bad[:10].tolist()}")
        if not np.isfinite(atoms.cell.array).all():
            problems.append(f"{where}: the cell is NaN or inf")
        if allowed is not None:
            unknown = sorted(set(atoms.numbers.tolist()) - allowed)
            if unknown:
                names = ", ".join(chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in unknown)
                known = ", ".join(chemical_symbols[z] for z in sorted(allowed))
                problems.append(f"{where}: elements unknown to the model: {names} (the model knows {known})")
        for name in required:
            key = keys.get(name, name)
            per_atom = name == "forces"
            value = _label(atoms, key, per_atom)
            if value is None:
                problems.append(f"{where}: missing {name} (looked for {key!r})")
                continue
            expected = {"energy": [(), (1,)], "forces": [(natoms, 3)], "stress": [(6,), (3, 3), (9,)]}.get(name)
            if expected is not None and value.shape not in expected:
                problems.append(
                    f"{where}: {name} has shape {list(value.shape)}, expected "
                    + " or ".join(str(list(s)) for s in expected)
                )
            elif not np.isfinite(value).all():
                problems.append(f"{where}: {name} contains NaN or inf")
    if problems:
        count = len({p.split(": ", 1)[0] for p in problems})
        raise DataError(
            f"{len(problems)} problem(s) in {count} of {len(structures)} structure(s); fix or remove them:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


_LABELS = frozenset({"energy", "forces", "stress"})


def load_graphs(
    structures: Sequence[Structure],
    cutoff: float,
    *,
    dtype: torch.dtype,
    keys: dict[str, str] | None = None,
    labels: Collection[str] | None = None,
    max_neighbors: int | None = None,
    strict_max_neighbors: bool = True,
) -> list[AtomsGraph]:
    """Convert validated structures to graphs with a neighbour list of radius ``cutoff`` (Å), keeping at most
    ``max_neighbors`` per atom as the model does (``strict_max_neighbors``: see :func:`zoo.graph.neighbor_list`).

    With ``labels`` (the targets the loss uses), the energy/forces/stress labels it does not name are dropped,
    so data where only some structures carry a label (e.g. stress on bulk cells only) still batch together.

    Raises:
        DataError: structures :func:`zoo.graph.from_ase` or the neighbour list reject (all of them listed).
    """
    keys = dict(keys or {})
    graphs: list[AtomsGraph] = []
    problems: list[str] = []
    for structure in structures:
        try:
            graph = from_ase(
                structure.atoms,
                energy_key=keys.get("energy", "energy"),
                forces_key=keys.get("forces", "forces"),
                stress_key=keys.get("stress", "stress"),
                dtype=dtype,
            )
            for unused in _LABELS.difference(labels if labels is not None else _LABELS):
                if unused in graph:
                    del graph[unused]
            graphs.append(
                radius_graph(graph, cutoff, max_neighbors=max_neighbors, strict_max_neighbors=strict_max_neighbors)
            )
        except GraphError as exc:
            problems.append(f"{structure.where}: {exc}")
    if problems:
        raise DataError(f"{len(problems)} structure(s) cannot be used:\n" + "\n".join(f"  {p}" for p in problems))
    return graphs


def batch_indices(
    num_items: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool, drop_last: bool
) -> list[list[int]]:
    """Global batches of one epoch: a permutation seeded by ``(seed, epoch)`` cut into ``batch_size`` pieces.

    With ``drop_last`` the last, smaller batch is dropped (training: every step sees a full global batch)
    unless it is the only one.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_items, generator=generator).tolist()
    else:
        order = list(range(num_items))
    batches = [order[start : start + batch_size] for start in range(0, num_items, batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def rank_slice(batch: list[int], rank: int, world_size: int) -> list[int]:
    """The part of a global batch that process ``rank`` of ``world_size`` computes (contiguous, near-equal)."""
    base, extra = divmod(len(batch), world_size)
    start = rank * base + min(rank, extra)
    return batch[start : start + base + (rank < extra)]


def collate(graphs: Sequence[AtomsGraph], indices: Sequence[int], device: torch.device) -> Batch:
    """Batch the graphs at ``indices`` and move the batch to ``device``."""
    return batch_graphs([graphs[i] for i in indices]).to(device)
