"""Tiny graphs for tests: a molecule, a periodic slab with an adsorbate, a triclinic bulk, a point cloud, an
N-body system.

All are deterministic given ``seed``; the atomic ones come with a neighbour list at ``cutoff``.

Example:
    >>> from zoo.testing import molecule_graph
    >>> graph = molecule_graph(num_atoms=6)
    >>> graph.pos.shape, graph.edge_index.shape[0]
    (torch.Size([6, 3]), 2)
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111

from zoo.graph import AtomsGraph, from_ase, radius_graph

__all__ = ["bulk_graph", "molecule_graph", "nbody_graph", "point_cloud_graph", "slab_graph"]


def _spread_points(num: int, rng: np.random.Generator, box: float, min_distance: float) -> np.ndarray:
    """Random points in a cube with no pair closer than ``min_distance`` (rejection sampling)."""
    points: list[np.ndarray] = []
    while len(points) < num:
        candidate = rng.uniform(0.0, box, size=3)
        if all(np.linalg.norm(candidate - p) >= min_distance for p in points):
            points.append(candidate)
    return np.array(points)


def molecule_graph(
    num_atoms: int = 8, *, seed: int = 0, cutoff: float = 5.0, elements=(1, 6, 7, 8), dtype=torch.float64
) -> AtomsGraph:
    """A random non-periodic molecule-like structure (atoms >= 0.9 A apart) with its radius graph."""
    rng = np.random.default_rng(seed)
    box = max(2.5, 1.4 * num_atoms ** (1 / 3))
    atoms = Atoms(numbers=rng.choice(elements, size=num_atoms), positions=_spread_points(num_atoms, rng, box, 0.9))
    return radius_graph(from_ase(atoms, dtype=dtype), cutoff)


def slab_graph(*, seed: int = 0, cutoff: float = 4.0, dtype=torch.float64) -> AtomsGraph:
    """A rattled Cu(111) slab (2x2x3, periodic in-plane only) with an O adsorbate."""
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    slab.rattle(0.05, seed=seed)
    slab.pbc = (True, True, False)
    return radius_graph(from_ase(slab, dtype=dtype), cutoff)


def bulk_graph(*, seed: int = 0, cutoff: float = 4.0, dtype=torch.float64) -> AtomsGraph:
    """A rattled, sheared (triclinic) two-atom NaCl cell, small enough that the cutoff exceeds the cell."""
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    cell = np.array(atoms.cell) @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.08], [0.02, 0.0, 1.0]])
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return radius_graph(from_ase(atoms, dtype=dtype), cutoff)


def point_cloud_graph(
    num_points: int = 24, *, seed: int = 0, cutoff: float = 1.5, num_features: int = 4, dtype=torch.float64
) -> AtomsGraph:
    """Points on a noisy ellipsoid with invariant per-point features ``x`` (no atomic numbers)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(num_points, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    pos = direction * np.array([2.0, 1.2, 0.8]) + 0.05 * rng.normal(size=(num_points, 3))
    features = rng.normal(size=(num_points, num_features))
    graph = AtomsGraph.build(torch.tensor(pos, dtype=dtype), x=torch.tensor(features, dtype=dtype))
    return radius_graph(graph, cutoff)


def nbody_graph(num_particles: int = 5, *, seed: int = 0, dtype=torch.float64) -> AtomsGraph:
    """Charged particles (charges +-1) with random positions and velocities, as the N-body models read them
    (``pos``, ``vel``, ``charges [N, 1]``; no edges: those models use all pairs)."""
    generator = torch.Generator().manual_seed(seed)
    charges = torch.where(torch.rand(num_particles, 1, generator=generator) < 0.5, -1.0, 1.0).to(dtype)
    pos = torch.randn(num_particles, 3, generator=generator, dtype=dtype)
    vel = 0.5 * torch.randn(num_particles, 3, generator=generator, dtype=dtype)
    return AtomsGraph.build(pos, charges=charges, vel=vel)
