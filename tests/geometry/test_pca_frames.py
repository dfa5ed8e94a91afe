"""PCA frames for frame averaging: frame sets, equivariance, FAENet conventions, degenerate structures."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from e3nn import o3

from zoo.geometry import DegenerateFramesWarning, frame_coordinates, pca_frames

F64 = torch.float64


def _cloud(count: int = 9, seed: int = 0) -> torch.Tensor:
    """An anisotropic point cloud with well separated principal variances."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, generator=generator, dtype=F64) * torch.tensor([3.0, 1.5, 0.5], dtype=F64) + 2.0


def _assert_same_set(first: torch.Tensor, second: torch.Tensor, atol: float = 1e-10) -> None:
    """Equal as sets along dim 0 (elements are distinct), whatever their order."""
    assert first.shape == second.shape
    distance = (first.flatten(1)[:, None, :] - second.flatten(1)[None, :, :]).abs().amax(-1)
    match = distance.argmin(dim=1)
    assert sorted(match.tolist()) == list(range(len(first)))
    assert float(distance[torch.arange(len(first)), match].max()) < atol


def _in_plane(angle: float, reflect: bool) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    return rotation @ torch.diag(torch.tensor([1.0, -1.0 if reflect else 1.0, 1.0], dtype=F64))


@pytest.mark.parametrize(("group", "count"), [("E3", 8), ("SE3", 4), ("E2", 4), ("SE2", 2)])
def test_frames_are_orthonormal_with_expected_determinants(group: str, count: int) -> None:
    frames, centroid = pca_frames(_cloud(), group=group)  # type: ignore[arg-type]
    assert frames.shape == (1, count, 3, 3) and centroid.shape == (1, 3) and frames.dtype == F64
    eye = torch.eye(3, dtype=F64).expand_as(frames)
    torch.testing.assert_close(frames @ frames.transpose(-1, -2), eye, atol=1e-13, rtol=0)
    determinants = torch.linalg.det(frames[0])
    if group.startswith("S"):
        torch.testing.assert_close(determinants, torch.ones(count, dtype=F64))
    else:
        assert int((determinants > 0).sum()) == count // 2
    if group.endswith("2"):
        assert torch.all(frames[..., 2, :] == torch.tensor([0.0, 0.0, 1.0], dtype=F64))
        assert torch.all(frames[..., :2, 2] == 0) and centroid[0, 2] == 0


def test_frames_follow_faenet_conventions() -> None:
    pos = _cloud()
    frames, centroid = pca_frames(pos)
    centred = (pos - pos.mean(dim=0)).numpy()
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    eigenvectors = eigenvectors[:, ::-1]  # descending variance
    eigenvectors = eigenvectors * np.where(eigenvectors.sum(axis=0) >= 0, 1.0, -1.0)  # FAENet's "det" signs
    signs = np.array(list(itertools.product([1, -1], repeat=3)), dtype=float)
    expected = np.stack([(eigenvectors * s).T for s in signs])  # FAENet's `eigenvec` is frames.T
    np.testing.assert_allclose(frames[0].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(centroid[0].numpy(), pos.mean(dim=0).numpy(), atol=1e-14)
    coordinates = frame_coordinates(pos, frames, centroid)
    np.testing.assert_allclose(coordinates.numpy(), np.stack([centred @ f.T for f in expected]), atol=1e-12)
    proper, _ = pca_frames(pos, group="SE3")
    torch.testing.assert_close(proper[0], frames[0][torch.linalg.det(frames[0]) > 0])  # same order, filtered


def test_planar_frames_follow_faenet_2d() -> None:
    pos = _cloud()
    frames, centroid = pca_frames(pos, group="E2")
    xy = (pos[:, :2] - pos[:, :2].mean(dim=0)).numpy()
    _, eigenvectors = np.linalg.eigh(xy.T @ xy)
    eigenvectors = eigenvectors[:, ::-1]
    eigenvectors = eigenvectors * np.where(eigenvectors.sum(axis=0) >= 0, 1.0, -1.0)
    for frame, signs in zip(frames[0], itertools.product([1, -1], repeat=2), strict=True):
        np.testing.assert_allclose(frame[:2, :2].numpy(), (eigenvectors * np.array(signs)).T, atol=1e-12)
    coordinates = frame_coordinates(pos, frames, centroid)
    assert torch.equal(coordinates[..., 2], pos[:, 2].expand(4, -1))  # z neither centred nor rotated


@pytest.mark.parametrize("group", ["E3", "SE3"])
def test_frames_are_equivariant_in_3d(group: str) -> None:
    pos = _cloud(seed=1)
    rotation = o3.rand_matrix(dtype=F64)
    transform = rotation if group == "SE3" else -rotation  # E3: include a reflection
    shift = torch.tensor([0.3, -4.0, 2.5], dtype=F64)
    moved = pos @ transform.T + shift
    frames, centroid = pca_frames(pos, group=group)  # type: ignore[arg-type]
    moved_frames, moved_centroid = pca_frames(moved, group=group)  # type: ignore[arg-type]
    _assert_same_set(moved_frames[0], frames[0] @ transform.T)
    torch.testing.assert_close(moved_centroid[0], transform @ centroid[0] + shift)
    _assert_same_set(frame_coordinates(moved, moved_frames, moved_centroid), frame_coordinates(pos, frames, centroid))


@pytest.mark.parametrize("group", ["E2", "SE2"])
def test_frames_are_equivariant_in_plane(group: str) -> None:
    pos = _cloud(seed=2)
    transform = _in_plane(0.7, reflect=group == "E2")
    shift = torch.tensor([1.5, -0.5, 0.0], dtype=F64)
    moved = pos @ transform.T + shift
    frames, centroid = pca_frames(pos, group=group)  # type: ignore[arg-type]
    moved_frames, moved_centroid = pca_frames(moved, group=group)  # type: ignore[arg-type]
    _assert_same_set(moved_frames[0], frames[0] @ transform.T)
    _assert_same_set(frame_coordinates(moved, moved_frames, moved_centroid), frame_coordinates(pos, frames, centroid))
    lifted = pos + torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    torch.testing.assert_close(pca_frames(lifted, group=group)[0], frames)  # type: ignore[arg-type]


def test_batched_frames_equal_per_graph_frames() -> None:
    first, second = _cloud(7, seed=3), _cloud(5, seed=4)
    pos = torch.cat([first, second])
    batch = torch.tensor([0] * 7 + [1] * 5)
    frames, centroid = pca_frames(pos, batch, group="SE3")
    for index, graph in enumerate((first, second)):
        single_frames, single_centroid = pca_frames(graph, group="SE3")
        torch.testing.assert_close(frames[index], single_frames[0])
        torch.testing.assert_close(centroid[index], single_centroid[0])
    coordinates = frame_coordinates(pos, frames, centroid, batch)
    torch.testing.assert_close(coordinates[:, 7:], frame_coordinates(second, *pca_frames(second, group="SE3")))


def test_integer_weights_equal_repeated_atoms() -> None:
    pos = _cloud(6, seed=5)
    weights = torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0, 1.0], dtype=F64)
    repeated = torch.repeat_interleave(pos, weights.long(), dim=0)
    frames, centroid = pca_frames(pos, weights=weights)
    expected_frames, expected_centroid = pca_frames(repeated)
    torch.testing.assert_close(frames, expected_frames)
    torch.testing.assert_close(centroid, expected_centroid)


@pytest.mark.parametrize(
    "pos",
    [
        [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.3], [0.0, 0.0, -0.3]],
        [[0.0, 0.0, 0.0], [0.5, 1.0, 2.0]],  # a linear molecule
        [[1.0, 2.0, 3.0]],  # a single atom
    ],
    ids=["square-bipyramid", "linear", "single-atom"],
)
def test_degenerate_structures_warn_and_stay_deterministic(pos: list[list[float]]) -> None:
    positions = torch.tensor(pos, dtype=F64)
    with pytest.warns(DegenerateFramesWarning, match="not equivariant"):
        frames, _ = pca_frames(positions)
    with pytest.warns(DegenerateFramesWarning):
        again, _ = pca_frames(positions)
    assert torch.equal(frames, again)
    torch.testing.assert_close(frames @ frames.transpose(-1, -2), torch.eye(3, dtype=F64).expand_as(frames))


def test_distinct_eigenvalues_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFramesWarning)
        pca_frames(_cloud(), group="E3")
        pca_frames(torch.tensor([[0.0, 0.0, 5.0], [2.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=F64), group="E2")


def test_bad_input_raises() -> None:
    pos = _cloud()
    with pytest.raises(ValueError, match="group"):
        pca_frames(pos, group="O3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no atoms"):
        pca_frames(pos[:0])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        pca_frames(pos[:, :2])
    with pytest.raises(ValueError, match="non-negative"):
        pca_frames(pos, weights=-torch.ones(len(pos), dtype=F64))
    with pytest.raises(ValueError, match="at least one atom"):
        pca_frames(pos, torch.zeros(len(pos), dtype=torch.long), num_graphs=2)


def test_proper_frames_of_a_batch_keep_pattern_order() -> None:
    """SE3 in a batch whose graphs have principal axes of both handedness: each graph keeps exactly its proper
    frames of the E3 set, in pattern order."""
    clouds = [_cloud(seed=seed) for seed in range(4)]
    clouds[1] = clouds[1] * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)  # mirrored: the other handedness
    pos = torch.cat(clouds)
    batch = torch.arange(4).repeat_interleave(9)
    frames, _ = pca_frames(pos, batch, group="E3")
    proper, _ = pca_frames(pos, batch, group="SE3")
    assert proper.shape == (4, 4, 3, 3)
    for graph in range(4):
        torch.testing.assert_close(proper[graph], frames[graph][torch.linalg.det(frames[graph]) > 0])
