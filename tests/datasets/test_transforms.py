"""Transforms: neighbour list with PBC, rotation, centring, PCA frames, noise, element mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.data import atomic_masses
from ase.neighborlist import neighbor_list as ase_neighbor_list

from zoo.datasets.transforms import (
    Center,
    Compose,
    DiffusionNoise,
    ElementMapping,
    NoisePositions,
    PCAFrames,
    RadiusGraph,
    RandomRotation,
    random_rotation,
)
from zoo.geometry.frames import frame_coordinates
from zoo.graph import GraphError, edge_vectors, from_ase


def test_radius_graph_with_pbc_matches_ase() -> None:
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    graph = RadiusGraph(cutoff=4.5)(from_ase(atoms, dtype=torch.float64))
    assert graph.edge_index.shape[1] == len(ase_neighbor_list("i", atoms, 4.5))
    _, length = edge_vectors(graph)
    np.testing.assert_allclose(np.sort(length.numpy()), np.sort(ase_neighbor_list("d", atoms, 4.5)), atol=1e-10)


def test_random_rotation_rotates_everything_consistently() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=2)
    graph = from_ase(atoms, dtype=torch.float64)
    graph.forces = torch.randn(len(atoms), 3, dtype=torch.float64)
    graph.stress = torch.randn(1, 3, 3, dtype=torch.float64)
    graph = RadiusGraph(cutoff=3.0)(graph)
    rotated = RandomRotation(seed=3)(graph)
    rotation = rotated.rotation[0]
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.det(rotation) == pytest.approx(1.0)
    vec, length = edge_vectors(graph)
    vec_rotated, length_rotated = edge_vectors(rotated)
    assert torch.allclose(vec_rotated, vec @ rotation.T, atol=1e-10)
    assert torch.allclose(length_rotated, length, atol=1e-10)
    assert torch.allclose(rotated.forces, graph.forces @ rotation.T)
    assert torch.allclose(rotated.stress[0], rotation @ graph.stress[0] @ rotation.T)
    assert not torch.equal(RandomRotation()(graph).rotation, RandomRotation()(graph).rotation)
    assert torch.equal(graph.pos, from_ase(atoms, dtype=torch.float64).pos), "the input was modified"


def test_center_and_pca_frames_are_invariant() -> None:
    graph = from_ase(molecule("CH3CH2OH"), dtype=torch.float64)
    centred = Center()(graph)
    assert torch.allclose(centred.pos.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    heavy = Center(weights="mass")(graph)
    masses = torch.as_tensor(atomic_masses, dtype=torch.float64)[graph.z]
    assert torch.allclose((masses[:, None] * heavy.pos).sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(heavy.pos + heavy.pos_offset, graph.pos)
    rotation = random_rotation(torch.float64, torch.Generator().manual_seed(0))
    turned = graph.__copy__()
    turned.pos = graph.pos @ rotation.T + 1.5
    frames = PCAFrames(group="E3")
    first, second = frames(graph), frames(turned)
    assert first.frames.shape == (1, 8, 3, 3) and first.frame_centroid.shape == (1, 3)
    coords = frame_coordinates(graph.pos, first.frames[0][None], first.frame_centroid)
    coords_turned = frame_coordinates(turned.pos, second.frames[0][None], second.frame_centroid)
    # The set of canonical coordinates over all frames is invariant.
    assert _frame_set(coords) == _frame_set(coords_turned)


def _frame_set(coords: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(np.round(frame.numpy(), 8).flatten()) for frame in coords)


def test_element_mapping() -> None:
    graph = from_ase(molecule("H2O"))
    assert ElementMapping((1, 6, 8))(graph).node_type.tolist() == [2, 0, 0]
    with pytest.raises(GraphError, match=r"elements O are not in the element mapping \(H, C\)"):
        ElementMapping((1, 6))(graph)
    with pytest.raises(ValueError, match="distinct"):
        ElementMapping((1, 1))


def test_noise_transforms() -> None:
    graph = from_ase(molecule("C6H6"), dtype=torch.float64)
    noisy = NoisePositions(sigma=0.1, centred=True, seed=0)(graph)
    assert torch.allclose(noisy.pos, graph.pos + 0.1 * noisy.noise)
    assert torch.allclose(noisy.noise.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    diffused = DiffusionNoise(timesteps=100, seed=1)(graph)
    alpha, sigma = float(diffused.alpha[0]), float(diffused.sigma[0])
    assert alpha**2 + sigma**2 == pytest.approx(1.0)
    assert 0 <= int(diffused.t[0]) <= 100
    assert torch.allclose(diffused.pos, alpha * diffused.pos_clean + sigma * diffused.noise)
    assert torch.allclose(diffused.pos_clean.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_compose_repr_names_every_parameter() -> None:
    transform = Compose([RadiusGraph(cutoff=5.0), ElementMapping([1, 8])])
    assert repr(transform) == (
        "Compose(transforms=(RadiusGraph(cutoff=5.0, max_neighbors=None, strict_max_neighbors=True), "
        "ElementMapping(elements=(1, 8))))"
    )
    assert repr(transform) != repr(Compose([RadiusGraph(cutoff=6.0), ElementMapping([1, 8])]))
