r"""PCA frames for frame averaging (Puny et al., ICLR 2022), with FAENet's conventions (Duval et al., 2023).

For each graph with positions :math:`x_i` and weights :math:`w_i` (default 1):

.. math::

    c = \frac{\sum_i w_i x_i}{\sum_i w_i}, \qquad
    C = \sum_i w_i (x_i - c)(x_i - c)^T = U \Lambda U^T,
    \quad \lambda_1 \ge \lambda_2 \ge \lambda_3 \ \text{(descending)},

and the frames are :math:`F_s = \mathrm{diag}(s)\, U^T` for sign patterns :math:`s \in \{\pm 1\}^3`: the rows
of a frame are the signed principal axes, largest variance first. Canonical coordinates are
:math:`F_s (x_i - c)`, i.e. ``(pos - centroid[batch]) @ frames[b, f].T`` (:func:`frame_coordinates`); FAENet's
rotation ``eigenvec`` is ``frames[b, f].T`` and its projected positions ``pos @ eigenvec`` are the same
numbers. Under :math:`x \mapsto Q x + t` with :math:`Q \in O(3)` the set of frames becomes
:math:`\{F_s Q^T\}` and the set of canonical coordinates is unchanged.

Groups (argument ``group``):

* ``"E3"``: all 8 sign patterns (FAENet ``frame_averaging="3D"``, ``fa_method="all"``);
* ``"SE3"``: the 4 with :math:`\det F = +1` (``"se3-all"``);
* ``"E2"``: FAENet's ``"2D"``: PCA of the :math:`(x, y)` coordinates only, the 4 in-plane sign patterns, and
  :math:`z` kept as it is: neither centred (the centroid's :math:`z` is 0) nor rotated (the last row of every
  frame is :math:`\hat z`). Equivariant to rotations and reflections about :math:`z` and to in-plane
  translations;
* ``"SE2"``: the 2 of those with :math:`\det F = +1` (``"2D"`` with ``"se3-all"``).

Order and signs (deterministic): the eigenvectors are first given FAENet's deterministic sign (each column of
:math:`U` gets a non-negative sum of components), then the sign patterns are enumerated in
``itertools.product((1, -1), repeat=d)`` order (:math:`d` = 3, or 2 in the plane), keeping the proper ones for
``"SE3"``/``"SE2"``. So frame 0 of ``"E3"``/``"E2"`` is FAENet's ``fa_method="det"`` frame; the order of the
others is that of FAENet's ``"all"`` up to the arbitrary signs ``torch.linalg.eigh`` gives.

Degenerate eigenvalues: if two principal variances are (nearly) equal (any symmetric top, a linear molecule,
a single atom) the principal axes inside that eigenspace are not defined by the geometry. The frames are then
whatever orthonormal basis ``torch.linalg.eigh`` returns for the eigenspace: reproducible for the same input
on the same device and library, but not equivariant, so a frame-averaged model is only approximately
invariant for such graphs. :func:`pca_frames` flags every graph whose consecutive eigenvalues differ by at most
``degeneracy_rtol`` times the largest with a :class:`DegenerateFramesWarning` (turn it into an error with
``warnings.simplefilter("error", DegenerateFramesWarning)``). Gradients through the frames exist only where
the eigenvalues are distinct.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Literal

import torch
from torch import Tensor

__all__ = ["DEFAULT_OUTPUT_TYPES", "DegenerateFramesWarning", "OutputType", "frame_coordinates", "pca_frames"]

# How a model output transforms under x -> Q x + t (Q orthogonal), for the usual output names: what frame
# averaging undoes and what the equivariance harness checks.
OutputType = Literal["scalar", "vector", "pseudovector", "position", "tensor2"]
DEFAULT_OUTPUT_TYPES: dict[str, OutputType] = {
    "energy": "scalar",
    "free_energy": "scalar",
    "energies": "scalar",
    "node_energy": "scalar",
    "charges": "scalar",
    "forces": "vector",
    "vel": "vector",
    "dipole": "vector",
    "pos": "position",
    "stress": "tensor2",
    "virial": "tensor2",
}

FrameGroup = Literal["E3", "SE3", "E2", "SE2"]
_GROUPS: dict[str, tuple[int, bool]] = {"E3": (3, False), "SE3": (3, True), "E2": (2, False), "SE2": (2, True)}


class DegenerateFramesWarning(UserWarning):
    """PCA frames of a graph with (nearly) equal principal variances: not equivariant for that graph."""


@functools.cache
def _sign_patterns(dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """All sign vectors in ``itertools.product((1, -1), repeat=dim)`` order, shape ``[2**dim, dim]``; made once
    per device (a copy from host memory in every forward pass would wait for the device's queue)."""
    return torch.tensor(list(itertools.product((1.0, -1.0), repeat=dim)), dtype=dtype, device=device)


def pca_frames(
    pos: Tensor,
    batch: Tensor | None = None,
    *,
    group: FrameGroup = "E3",
    weights: Tensor | None = None,
    num_graphs: int | None = None,
    degeneracy_rtol: float = 1e-4,
) -> tuple[Tensor, Tensor]:
    r"""PCA frames and centroids of each graph of a batch (conventions in the module docstring).

    Args:
        pos: positions, shape ``[N, 3]``, floating point.
        batch: graph index of each atom, shape ``[N]`` (``None``: one graph).
        group: ``"E3"`` (8 frames), ``"SE3"`` (4), ``"E2"`` (4) or ``"SE2"`` (2).
        weights: non-negative per-atom weights :math:`w_i`, shape ``[N]`` (``None``: all 1, FAENet). Every
            graph needs a positive total weight.
        num_graphs: number of graphs :math:`B` (``None``: ``batch.max() + 1``); graphs without atoms raise.
        degeneracy_rtol: relative eigenvalue gap at or below which a :class:`DegenerateFramesWarning` is issued.

    Returns:
        ``(frames, centroid)``: ``frames [B, F, 3, 3]``, rows = signed principal axes, in the dtype of ``pos``;
        ``centroid [B, 3]`` (its :math:`z` is 0 for ``"E2"``/``"SE2"``).

    Example:
        >>> import torch
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> frames, centroid = pca_frames(pos, group="SE3")
        >>> frames.shape, centroid
        (torch.Size([1, 4, 3, 3]), tensor([[1.0000, 0.5000, 0.2500]]))
    """
    if group not in _GROUPS:
        raise ValueError(f"group must be one of {sorted(_GROUPS)}, got {group!r}")
    dim, proper_only = _GROUPS[group]
    if pos.ndim != 2 or pos.shape[1] != 3 or not pos.is_floating_point():
        raise ValueError(f"pos must be a floating-point tensor of shape [N, 3], got {pos.dtype} {tuple(pos.shape)}")
    if len(pos) == 0:
        raise ValueError("pos has no atoms")
    if batch is None:
        batch = torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    elif batch.shape != (len(pos),):
        raise ValueError(f"batch must have shape [{len(pos)}], got {tuple(batch.shape)}")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1
    if weights is None:
        weights = torch.ones(len(pos), dtype=pos.dtype, device=pos.device)
    elif weights.shape != (len(pos),):
        raise ValueError(f"weights must have shape [{len(pos)}], got {tuple(weights.shape)}")
    elif bool(torch.any(weights < 0)):
        raise ValueError("weights must be non-negative")
    weights = weights.to(pos.dtype)

    total = pos.new_zeros(num_graphs).index_add_(0, batch, weights)  # [B]
    if not bool(torch.all(total > 0)):
        raise ValueError("every graph needs at least one atom with positive weight")
    coords = pos[:, :dim]  # [N, d]
    centroid = pos.new_zeros(num_graphs, dim).index_add_(0, batch, weights[:, None] * coords) / total[:, None]
    centred = coords - centroid[batch]  # [N, d]
    outer = weights[:, None, None] * centred[:, :, None] * centred[:, None, :]  # [N, d, d]
    covariance = pos.new_zeros(num_graphs, dim, dim).index_add_(0, batch, outer)  # [B, d, d]

    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; eigenvectors in columns
    eigenvalues, eigenvectors = eigenvalues.flip(-1), eigenvectors.flip(-1)  # descending
    _warn_if_degenerate(eigenvalues, degeneracy_rtol)
    column_sign = torch.where(eigenvectors.sum(dim=-2) >= 0, 1.0, -1.0).to(pos.dtype)  # [B, d]
    axes = (eigenvectors * column_sign[:, None, :]).transpose(-1, -2)  # [B, d, d], rows = principal axes

    patterns = _sign_patterns(dim, pos.dtype, pos.device)  # [P, d]
    signed_axes = patterns[None, :, :, None] * axes[:, None, :, :]  # [B, P, d, d]
    frames = pos.new_zeros(num_graphs, len(patterns), 3, 3)
    frames[..., :dim, :dim] = signed_axes
    if dim == 2:
        frames[..., 2, 2] = 1.0
        centroid = torch.cat([centroid, centroid.new_zeros(num_graphs, 1)], dim=-1)
    if proper_only:
        # det(diag(s) A) = prod(s) det(A), with det(A) = +-1 for the orthonormal axes A.
        proper = patterns.prod(dim=-1)[None, :] * torch.linalg.det(axes)[:, None] > 0  # [B, P], P/2 per row
        # the proper patterns of each graph in pattern order (a stable sort puts them first; unlike a boolean
        # mask, no host-device sync for the output size)
        keep = torch.argsort((~proper).to(torch.uint8), dim=1, stable=True)[:, : len(patterns) // 2]
        frames = frames.gather(1, keep[:, :, None, None].expand(-1, -1, 3, 3))
    return frames, centroid


def _warn_if_degenerate(eigenvalues: Tensor, rtol: float) -> None:
    """Warn about graphs whose descending eigenvalues ``[B, d]`` have a relative gap ``<= rtol``."""
    gaps = eigenvalues[:, :-1] - eigenvalues[:, 1:]  # [B, d-1], >= 0 up to rounding
    degenerate = torch.any(gaps <= rtol * eigenvalues[:, :1].clamp(min=0), dim=-1)  # [B]
    if bool(torch.any(degenerate)):
        graphs = torch.nonzero(degenerate).flatten().tolist()
        shown = ", ".join(str(g) for g in graphs[:10]) + (", ..." if len(graphs) > 10 else "")
        warnings.warn(
            f"{len(graphs)} graph(s) have (nearly) equal principal variances (graphs {shown}): their PCA "
            "frames are not determined by the geometry and are not equivariant",
            DegenerateFramesWarning,
            stacklevel=3,
        )


def frame_coordinates(pos: Tensor, frames: Tensor, centroid: Tensor, batch: Tensor | None = None) -> Tensor:
    r"""Canonical coordinates :math:`F_f (x_i - c)` of every atom in every frame of its graph.

    Args:
        pos: positions, shape ``[N, 3]``.
        frames: from :func:`pca_frames`, shape ``[B, F, 3, 3]``.
        centroid: from :func:`pca_frames`, shape ``[B, 3]``.
        batch: graph index of each atom, shape ``[N]`` (``None``: one graph).

    Returns:
        Tensor of shape ``[F, N, 3]``.

    Example:
        >>> import torch
        >>> pos = torch.randn(6, 3, dtype=torch.float64)
        >>> frames, centroid = pca_frames(pos)
        >>> frame_coordinates(pos, frames, centroid).shape
        torch.Size([8, 6, 3])
    """
    if batch is None:
        batch = torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    centred = pos - centroid[batch]  # [N, 3]
    return torch.einsum("nfij,nj->fni", frames[batch], centred)
