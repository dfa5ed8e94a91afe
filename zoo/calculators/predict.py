"""Batch inference of a potential over many structures: ``zoo.predict``.

Structures are batched in input order (up to ``batch_size`` structures or ``max_atoms`` atoms; a batch never
mixes fully periodic and other structures, so stress is computed wherever it is defined) and results come back
in input order, one dict per structure.

Example:
    >>> import zoo
    >>> from ase.build import bulk, molecule
    >>> model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1)
    >>> results = zoo.predict(model, [bulk("Cu"), molecule("H2O"), bulk("Au").repeat(2)], batch_size=2)
    >>> [sorted(r) for r in results]
    [['energy', 'forces', 'stress'], ['energy', 'forces'], ['energy', 'forces', 'stress']]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ase
import ase.io
import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from zoo.calculators.ase import check_potential, graph_for_model, run_potential
from zoo.graph import batch_graphs, radius_graph
from zoo.nn.chunking import check_max_edges

__all__ = ["iter_structures", "predict"]

Structure = ase.Atoms | str | os.PathLike[str]


def iter_structures(items: Iterable[Structure] | Structure) -> Iterator[ase.Atoms]:
    """Atoms from a mix of ``ase.Atoms`` and files (every frame of anything ``ase.io`` reads)."""
    if isinstance(items, ase.Atoms | str | os.PathLike):
        items = [items]
    for item in items:
        if isinstance(item, ase.Atoms):
            yield item
        else:
            yield from ase.io.iread(os.fspath(item), index=":")


def _batches(
    structures: Iterable[ase.Atoms], batch_size: int | None, max_atoms: int | None
) -> Iterator[list[ase.Atoms]]:
    batch: list[ase.Atoms] = []
    atoms_in_batch = 0
    for atoms in structures:
        full = bool(batch) and (
            (batch_size is not None and len(batch) >= batch_size)
            or (max_atoms is not None and atoms_in_batch + len(atoms) > max_atoms)
            or bool(batch[0].pbc.all()) != bool(atoms.pbc.all())
        )
        if full:
            yield batch
            batch, atoms_in_batch = [], 0
        batch.append(atoms)
        atoms_in_batch += len(atoms)
    if batch:
        yield batch


def predict(
    model: torch.nn.Module | str | os.PathLike[str],
    structures: Iterable[Structure] | Structure,
    *,
    batch_size: int | None = None,
    max_atoms: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    stress: bool = True,
    progress: Callable[[int], None] | None = None,
    max_edges_per_chunk: int | None = None,
) -> list[dict[str, Any]]:
    """Energies (eV), forces (eV/Å) and, for 3D-periodic structures, stress (Voigt, eV/Å³) of many structures.

    Args:
        model: a zoo potential or a name :func:`zoo.load` accepts.
        structures: ``ase.Atoms`` and/or files, in any mix; results follow this order.
        batch_size: structures per batch (default 32 when ``max_atoms`` is not given).
        max_atoms: atoms per batch (a structure larger than this gets a batch of its own).
        device, dtype: where and in which precision to run (default: the model's).
        stress: compute stress where the model can and the structure is periodic in 3D.
        progress: called with the number of structures finished after each batch.
        max_edges_per_chunk: compute each layer's per-edge tensors for at most this many edges at a time, as in
            :class:`~zoo.calculators.ZooCalculator` (for 10k+ atom structures); ``None``: all edges at once.

    Returns:
        One dict per structure: ``energy`` (float), ``forces`` (``[n, 3]``), ``stress`` (``[6]``) when computed.
    """
    if not isinstance(model, torch.nn.Module):
        from zoo.api import load

        model = load(model, device=device, dtype=dtype)
    if (batch_size is not None and batch_size < 1) or (max_atoms is not None and max_atoms < 1):
        raise ValueError("batch_size and max_atoms must be positive")
    if batch_size is None and max_atoms is None:
        batch_size = 32
    max_edges_per_chunk = check_max_edges(max_edges_per_chunk, "max_edges_per_chunk")
    parameter = next(model.parameters(), torch.empty(0))
    device = torch.device(device) if device is not None else parameter.device
    dtype = dtype or parameter.dtype
    model = model.to(device=device, dtype=dtype).eval()
    metadata = check_potential(model)
    stress_mode = metadata.get("stress") if stress else None
    results: list[dict[str, Any]] = []
    for batch in _batches(iter_structures(structures), batch_size, max_atoms):
        graph = batch_graphs([graph_for_model(atoms, metadata, dtype) for atoms in batch])
        graph = radius_graph(
            graph,
            float(metadata["cutoff"]),
            max_neighbors=metadata.get("max_neighbors"),
            strict_max_neighbors=bool(metadata.get("strict_max_neighbors", True)),
        )
        with_stress = stress_mode in ("conservative", "direct") and bool(batch[0].pbc.all())
        options = {"compute_stress": True} if with_stress and stress_mode == "conservative" else {}
        output = run_potential(model, graph.to(device), max_edges_per_chunk=max_edges_per_chunk, **options)
        energies = output["energy"].detach().cpu().double().numpy()
        forces = np.split(output["forces"].detach().cpu().double().numpy(), np.cumsum([len(a) for a in batch])[:-1])
        for index in range(len(batch)):
            result: dict[str, Any] = {"energy": float(energies[index]), "forces": forces[index]}
            if with_stress:
                result["stress"] = full_3x3_to_voigt_6_stress(output["stress"][index].detach().cpu().double().numpy())
            results.append(result)
        if progress is not None:
            progress(len(results))
    return results
