"""Open any supported file by its name, summarise a dataset, convert one to ASE-LMDB (``zoo data inspect/convert``)."""

from __future__ import annotations

import keyword
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ase
import numpy as np
from ase.data import chemical_symbols

from zoo.datasets.ase_db import AseDBDataset, AseLmdbWriter, is_aselmdb
from zoo.datasets.ase_files import AseReadDataset
from zoo.datasets.base import FrameError, LabelKeys, StructureDataset
from zoo.datasets.md17 import MDTrajectoryDataset
from zoo.datasets.molecules import MoleculeFileDataset
from zoo.datasets.oc20 import OC20LmdbDataset
from zoo.graph import GraphError, radius_graph, to_ase

__all__ = ["DatasetSummary", "convert_to_aselmdb", "inspect_dataset", "open_dataset"]

PathLike = str | os.PathLike[str]
# Arrays and info that ASE rows store themselves (or that must not go into key_value_pairs).
_ROW_ARRAYS = {"numbers", "positions", "momenta", "tags", "masses", "initial_charges", "initial_magmoms"}
_RESERVED_KEYS = {"id", "unique_id", "ctime", "mtime", "user", "calculator", "energy", "forces", "stress", "natoms"}


def open_dataset(paths: PathLike | Sequence[PathLike], *, keys: LabelKeys | None = None, **kwargs: Any) -> Any:
    """A dataset for ``paths``, chosen by name and content.

    ``.db``: ASE SQLite; ``.aselmdb``: ASE-LMDB; ``.lmdb`` (or a directory of them): ASE-LMDB or OC20 legacy LMDB,
    told apart by the records; ``.npz``: MD17/rMD17/MD22; ``.sdf``/``.mol``/``.mol2``: RDKit molecules; anything
    else: :mod:`ase.io` (extxyz, xyz, traj, OUTCAR, CIF, ...). Several paths are read together by ase.io or RDKit.
    ``kwargs`` go to the dataset (``transform``, ``dtype``).
    """
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
    first = paths[0]
    suffix = first.suffix.lower()
    if len(paths) == 1:
        if first.is_dir() or suffix == ".lmdb":
            lmdb_file = first if not first.is_dir() else next(iter(sorted(first.glob("*.lmdb"))), None)
            if lmdb_file is None:
                raise FrameError(str(first), "a directory without *.lmdb files")
            if first.is_dir() or not is_aselmdb(lmdb_file):
                return OC20LmdbDataset(first, **kwargs)
            return AseDBDataset(first, keys=keys, **kwargs)
        if suffix in (".db", ".aselmdb"):
            return AseDBDataset(first, keys=keys, **kwargs)
        if suffix == ".npz":
            return MDTrajectoryDataset(first, **kwargs)
    if suffix in (".sdf", ".mol", ".mol2"):
        return MoleculeFileDataset(paths, keys=keys, **kwargs)
    return AseReadDataset(paths, keys=keys, **kwargs)


@dataclass
class DatasetSummary:
    """What ``zoo data inspect`` prints. Energies in eV, forces in eV/Å, distances in Å."""

    structures: int = 0
    bad: list[FrameError] = field(default_factory=list)
    atoms: list[int] = field(default_factory=list)
    elements: Counter = field(default_factory=Counter)
    periodic: int = 0
    energy: list[float] = field(default_factory=list)
    energy_per_atom: list[float] = field(default_factory=list)
    force_norms: list[np.ndarray] = field(default_factory=list)
    cutoff: float | None = None
    neighbours: list[np.ndarray] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` lines of the summary."""
        atoms = np.array(self.atoms)
        rows = [("structures", f"{self.structures} ({len(self.bad)} bad)")]
        if atoms.size:
            rows.append(
                (
                    "atoms",
                    f"{atoms.sum()} total; per structure min {atoms.min()}, mean {atoms.mean():.1f}, max {atoms.max()}",
                )
            )
        rows.append(("periodic", f"{self.periodic} of {len(self.atoms)}"))
        counts = ", ".join(f"{chemical_symbols[z]} {n}" for z, n in sorted(self.elements.items()))
        rows.append(("elements", counts or "-"))
        for label, values, unit in (("energy", self.energy, "eV"), ("energy/atom", self.energy_per_atom, "eV")):
            if values:
                array = np.array(values)
                rows.append(
                    (
                        label,
                        f"mean {array.mean():.4g}, std {array.std():.4g}, min {array.min():.4g}, "
                        f"max {array.max():.4g} {unit} ({array.size} structures)",
                    )
                )
        if self.force_norms:
            norms = np.concatenate(self.force_norms)
            rms = float(np.sqrt((norms**2).mean()))
            rows.append(("|forces|", f"mean {norms.mean():.4g}, rms {rms:.4g}, max {norms.max():.4g} eV/Å"))
        if self.cutoff is not None and self.neighbours:
            counts_per_atom = np.concatenate(self.neighbours)
            rows.append(
                (
                    f"neighbours @ {self.cutoff:g} Å",
                    f"per atom mean {counts_per_atom.mean():.2f}, min {counts_per_atom.min()}, max "
                    f"{counts_per_atom.max()}; isolated atoms {(counts_per_atom == 0).sum()}",
                )
            )
        return rows


def inspect_dataset(dataset: StructureDataset, *, cutoff: float | None = None) -> DatasetSummary:
    """Read every structure of ``dataset`` and summarise it; bad frames are collected, not raised.

    Args:
        dataset: any map-style dataset of zoo.
        cutoff: also count neighbours within this radius (Å), with periodic images.
    """
    summary = DatasetSummary(structures=len(dataset), cutoff=cutoff)
    for index in range(len(dataset)):
        try:
            graph = dataset[index]
            if cutoff is not None:
                edges = radius_graph(graph, cutoff).edge_index
                summary.neighbours.append(np.bincount(edges[1].numpy(), minlength=graph.pos.shape[0]))
        except FrameError as error:
            summary.bad.append(error)
            continue
        except GraphError as error:
            summary.bad.append(FrameError(dataset.where(index), str(error)))
            continue
        natoms = int(graph.pos.shape[0])
        summary.atoms.append(natoms)
        if "z" in graph:
            summary.elements.update(graph.z.tolist())
        summary.periodic += int(bool(graph.pbc.any()))
        if "energy" in graph:
            summary.energy.append(float(graph.energy[0]))
            summary.energy_per_atom.append(float(graph.energy[0]) / natoms)
        if "forces" in graph:
            summary.force_norms.append(graph.forces.double().norm(dim=-1).numpy())
    return summary


def _row_payload(atoms: ase.Atoms) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(key_value_pairs, data)`` that keep the atoms' extra info and arrays in an ASE row."""
    key_value_pairs: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, value in atoms.info.items():
        scalar = isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_))
        if scalar and key.isidentifier() and not keyword.iskeyword(key) and key not in _RESERVED_KEYS:
            key_value_pairs[key] = value.item() if isinstance(value, np.generic) else value
        else:
            data[key] = value
    for key, value in atoms.arrays.items():
        if key not in _ROW_ARRAYS:
            data[key] = value
    return key_value_pairs, data


def convert_to_aselmdb(dataset: StructureDataset, out: PathLike) -> tuple[int, list[FrameError]]:
    """Write every good structure of ``dataset`` to the ASE-LMDB file ``out``; report the bad ones.

    Each structure is first read through the dataset (so the same checks apply: NaN, shapes, required labels).
    Sources that hold :class:`ase.Atoms` (ase.io files, ASE databases) are written as they are, their extra
    ``info`` as key-value pairs or data and extra per-atom arrays as data (so ``REF_energy``-style keys
    survive); other sources are written through :func:`zoo.graph.to_ase`.

    Returns:
        ``(written, bad)``: the number of rows written and a :class:`~zoo.datasets.FrameError` per bad structure.

    Raises:
        FileExistsError: ``out`` exists already.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another output file")
    bad: list[FrameError] = []
    written = 0
    with AseLmdbWriter(out) as writer:
        for index in range(len(dataset)):
            try:
                graph = dataset[index]
                atoms = dataset.atoms(index) if hasattr(dataset, "atoms") else to_ase(graph)
            except (FrameError, GraphError) as error:
                bad.append(error if isinstance(error, FrameError) else FrameError(dataset.where(index), str(error)))
                continue
            key_value_pairs, data = _row_payload(atoms)
            writer.write(atoms, key_value_pairs=key_value_pairs, data=data)
            written += 1
    return written, bad
