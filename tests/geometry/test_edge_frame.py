"""Edge-aligned frames (eSCN/EquiformerV2): polar axis, orthonormality, Wigner matrices, fairchem's draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.geometry import edge_rotation_matrix, edge_wigner, spherical_harmonics

F64 = torch.float64
POLAR = torch.tensor([0.0, 1.0, 0.0], dtype=F64)


def _edges(seed: int = 0) -> torch.Tensor:
    """Random edges plus edges along each signed coordinate axis (the polar axis is a gimbal-lock case)."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.cat([torch.eye(3, dtype=F64), -torch.eye(3, dtype=F64)]) * 1.7
    return torch.cat([torch.randn(40, 3, generator=generator, dtype=F64) * 2.0, axes])


def _apply(matrix: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return (matrix @ vectors[..., None])[..., 0]


def _reference_frame(vec: np.ndarray, auxiliary: np.ndarray) -> np.ndarray:
    """fairchem's init_edge_rot_mat, re-derived in numpy from its description: guarded auxiliary vector,
    then rows (e x a, e, (e x a) x e), normalised."""
    frames = []
    for edge, aux in zip(vec, auxiliary, strict=True):
        edge = edge / np.linalg.norm(edge)
        aux = aux / np.linalg.norm(aux)
        candidates = [aux, np.array([-aux[1], aux[0], aux[2]]), np.array([aux[0], -aux[2], aux[1]])]
        chosen = min(candidates, key=lambda c: abs(c @ edge))  # min() keeps the first on ties
        first = np.cross(edge, chosen)
        first /= np.linalg.norm(first)
        third = -np.cross(edge, first)
        third /= np.linalg.norm(third)
        frames.append(np.stack([first, edge, third]))
    return np.stack(frames)


@pytest.mark.parametrize("perpendicular", ["deterministic", "random"])
def test_rotation_maps_edge_to_polar_axis(perpendicular: str) -> None:
    vec = _edges()
    rotation = edge_rotation_matrix(vec, perpendicular=perpendicular)
    assert rotation.shape == (len(vec), 3, 3) and rotation.dtype == F64
    unit = vec / vec.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(_apply(rotation, unit), POLAR.expand_as(unit), atol=1e-14, rtol=0)
    eye = torch.eye(3, dtype=F64).expand_as(rotation)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), eye, atol=1e-14, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(len(vec), dtype=F64), atol=1e-14, rtol=0)


def test_deterministic_auxiliary_is_least_aligned_axis() -> None:
    vec = torch.tensor([[1.0, 2.0, 3.0], [3.0, -0.5, 2.0], [1.0, 1.0, -0.2], [1.0, 1.0, 1.0]], dtype=F64)
    unit = vec / vec.norm(dim=-1, keepdim=True)
    axis = torch.eye(3, dtype=F64)[[0, 1, 2, 0]]  # smallest |component|; first axis on ties
    expected = torch.linalg.cross(unit, axis)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    rotation = edge_rotation_matrix(vec)
    torch.testing.assert_close(rotation[:, 0], expected, atol=1e-15, rtol=0)
    torch.testing.assert_close(edge_rotation_matrix(vec.float()), rotation.float(), atol=1e-6, rtol=0)
    assert torch.equal(edge_rotation_matrix(vec), rotation)


def test_explicit_auxiliary_vectors_follow_fairchem() -> None:
    vec = _edges(seed=1)
    auxiliary = torch.rand(len(vec), 3, generator=torch.Generator().manual_seed(5), dtype=F64) - 0.5
    auxiliary[-3:] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -0.3], [1.0, 0.0, 0.0]], dtype=F64)
    vec[-3:] = torch.tensor([[0.0, 0.0, 2.0], [0.1, 0.0, 1.0], [1.0, 0.05, 0.0]], dtype=F64)  # force the guard
    expected = torch.from_numpy(_reference_frame(vec.numpy(), auxiliary.numpy()))
    torch.testing.assert_close(edge_rotation_matrix(vec, perpendicular=auxiliary), expected, atol=1e-14, rtol=0)
    single = edge_rotation_matrix(vec.float(), perpendicular=auxiliary.float())
    torch.testing.assert_close(single, expected.float(), atol=2e-6, rtol=0)


def test_random_mode_reproduces_seeded_draws() -> None:
    vec = _edges(seed=2)
    torch.manual_seed(123)
    drawn = edge_rotation_matrix(vec, perpendicular="random")
    torch.manual_seed(123)
    explicit = edge_rotation_matrix(vec, perpendicular=torch.rand_like(vec) - 0.5)
    assert torch.equal(drawn, explicit)


def test_frames_differ_only_by_roll_about_the_edge() -> None:
    vec = _edges(seed=3)
    deterministic = edge_rotation_matrix(vec)
    torch.manual_seed(0)
    fairchem_like = edge_rotation_matrix(vec, perpendicular="random")
    relative = deterministic @ fairchem_like.transpose(-1, -2)  # a rotation about the polar axis
    torch.testing.assert_close(_apply(relative, POLAR.expand_as(vec)), POLAR.expand_as(vec), atol=1e-14, rtol=0)
    sh_edge = spherical_harmonics(6, vec)
    torch.manual_seed(0)
    wigner_random, _ = edge_wigner(vec, 6, perpendicular="random")
    wigner_deterministic, _ = edge_wigner(vec, 6)
    rotated = _apply(wigner_deterministic, sh_edge)
    torch.testing.assert_close(rotated, _apply(wigner_random, sh_edge), atol=1e-12, rtol=0)
    torch.testing.assert_close(rotated, spherical_harmonics(6, POLAR).expand_as(rotated), atol=1e-12, rtol=0)


@pytest.mark.parametrize("perpendicular", ["deterministic", "random"])
def test_edge_wigner_is_orthogonal_and_equivariant(perpendicular: str) -> None:
    vec = _edges(seed=4)
    lmax = 8
    wigner, wigner_inv = edge_wigner(vec, lmax, perpendicular=perpendicular)
    size = (lmax + 1) ** 2
    assert wigner.shape == wigner_inv.shape == (len(vec), size, size)
    torch.testing.assert_close(wigner_inv, wigner.transpose(-1, -2))
    eye = torch.eye(size, dtype=F64).expand_as(wigner)
    torch.testing.assert_close(wigner @ wigner_inv, eye, atol=1e-12, rtol=0)
    # D(R) Y(x) = Y(R x) for arbitrary x, with the rotation of each edge.
    torch.manual_seed(1)
    rotation = edge_rotation_matrix(vec, perpendicular=perpendicular)
    torch.manual_seed(1)
    wigner, _ = edge_wigner(vec, lmax, perpendicular=perpendicular)
    points = torch.randn(len(vec), 3, dtype=F64)
    torch.testing.assert_close(
        _apply(wigner, spherical_harmonics(lmax, points)),
        spherical_harmonics(lmax, _apply(rotation, points)),
        atol=1e-12,
        rtol=0,
    )


def test_frames_are_detached_and_follow_dtype() -> None:
    vec = _edges().float().requires_grad_()
    wigner, wigner_inv = edge_wigner(vec, 2)
    assert wigner.dtype == torch.float32 and not wigner.requires_grad and not wigner_inv.requires_grad
    assert not edge_rotation_matrix(vec).requires_grad


def test_bad_edges_and_auxiliary_vectors_raise() -> None:
    vec = _edges()
    with pytest.raises(ValueError, match="overlapping"):
        edge_rotation_matrix(torch.cat([vec, torch.zeros(1, 3, dtype=F64)]))
    with pytest.raises(ValueError, match="overlapping"):
        edge_rotation_matrix(torch.tensor([[float("nan"), 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[E, 3\]"):
        edge_rotation_matrix(vec[:, :2])
    with pytest.raises(ValueError, match="match vec"):
        edge_rotation_matrix(vec, perpendicular=torch.rand(len(vec), 3))
    with pytest.raises(ValueError, match="non-zero"):
        edge_rotation_matrix(vec, perpendicular=torch.zeros_like(vec))
    with pytest.raises(ValueError, match="perpendicular must be"):
        edge_rotation_matrix(vec, perpendicular="fixed")  # type: ignore[arg-type]
