r"""Edge-aligned frames of eSCN and EquiformerV2, and their Wigner-D matrices.

Each edge vector :math:`\vec r` gets a rotation :math:`R` with :math:`R\,\hat r = \hat y`, e3nn's polar axis
(so :math:`D(R)\, Y(\hat r)` has only :math:`m = 0` entries), built as fairchem 1.x does in
``init_edge_rot_mat`` (EquiformerV2) and ``eSCN._init_edge_rot_mat``:

.. math::

    \hat r = \vec r / |\vec r|, \qquad
    \hat u = \frac{\hat r \times \vec a}{|\hat r \times \vec a|}, \qquad
    R = \begin{pmatrix} \hat u^T \\ \hat r^T \\ (\hat u \times \hat r)^T \end{pmatrix},

where :math:`\vec a` is an auxiliary vector not parallel to :math:`\hat r`. It only fixes the roll of the frame
about the edge: two choices of :math:`\vec a` give rotations that differ by a rotation about :math:`\hat y`
applied after :math:`R`, and the same :math:`D(R)\, Y(\hat r)`. The choices (argument ``perpendicular``):

* ``"deterministic"`` (default): :math:`\vec a` is the coordinate axis along which :math:`\hat r` has its
  smallest absolute component (the first such axis, :math:`x` before :math:`y` before :math:`z`, on ties), so
  :math:`|\hat r \cdot \vec a| \le 1/\sqrt 3`. Same input, same frame; the roll jumps where the smallest
  component changes axis (any choice that depends on :math:`\hat r` alone must jump somewhere).
* ``"random"``: fairchem's draw, :math:`\vec a = \mathrm{U}[0, 1)^3 - 1/2` from ``torch.rand_like(vec)``,
  then fairchem's guard against near-parallel draws (below). With the same seed and the same edge order this
  reproduces fairchem's frames.
* a tensor ``[E, 3]``: explicit auxiliary vectors that go through the same guard as ``"random"``. Pass
  ``torch.rand_like(vec) - 0.5`` drawn under fairchem's seed to reproduce its frames in a parity test
  (they agree to rounding: fairchem normalises some vectors twice).

fairchem's guard: :math:`\vec a` is normalised and replaced by whichever of :math:`\vec a`,
:math:`(-a_y, a_x, a_z)` and :math:`(a_x, -a_z, a_y)` (two quarter-turns of it) is least aligned with
:math:`\hat r` (the first on ties). The three are never all close to one direction (the least aligned has
:math:`|\hat r \cdot \hat a| \lesssim 0.85` for every pair), so fairchem's ``assert`` that it is below 0.99
cannot fail and has no counterpart here.

Like fairchem, the frames and their Wigner matrices are returned detached: they are constants with respect
to the positions. (fairchem's eSCN and EquiformerV2 predict forces directly; the Euler angles behind
:math:`D(R)` are singular for edges along :math:`\pm\hat y`, so gradients through them would not be finite
there.) Edges shorter than :math:`10^{-4}` raise a :class:`ValueError`; fairchem logs an error and goes on
with NaNs.

fairchem builds its Wigner matrices in the default dtype whatever the dtype of the edges; here they have the
dtype of ``vec``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zoo.geometry.spherical import wigner_D_blocks

__all__ = ["edge_rotation_matrix", "edge_wigner"]

MIN_EDGE_LENGTH = 1e-4
"""Edges shorter than this have no direction to align (fairchem logs an error below the same bound)."""


def _unit(vec: Tensor) -> Tensor:
    """``vec / |vec|`` along the last dimension, with the norm written as fairchem writes it."""
    return vec / torch.sqrt(torch.sum(vec**2, dim=-1, keepdim=True))


def _least_aligned_axis(direction: Tensor) -> Tensor:
    """The coordinate axis along which each unit ``direction`` [E, 3] has its smallest absolute component."""
    axis = torch.argmin(direction.abs(), dim=-1)  # first minimum on ties
    return torch.nn.functional.one_hot(axis, num_classes=3).to(direction.dtype)


def _guarded_auxiliary(direction: Tensor, auxiliary: Tensor) -> Tensor:
    """fairchem's choice among an auxiliary vector and two quarter-turns of it, least aligned with the edge."""
    auxiliary_length = torch.sqrt(torch.sum(auxiliary**2, dim=-1))
    if not bool(torch.all(torch.isfinite(auxiliary_length) & (auxiliary_length > 0))):
        raise ValueError("every auxiliary vector in `perpendicular` must be non-zero and finite")
    auxiliary = auxiliary / auxiliary_length[:, None]
    a_x, a_y, a_z = auxiliary.unbind(-1)
    candidates = torch.stack(
        [
            auxiliary,
            torch.stack([-a_y, a_x, a_z], dim=-1),  # quarter-turn about z
            torch.stack([a_x, -a_z, a_y], dim=-1),  # quarter-turn about x
        ],
        dim=1,
    )  # [E, 3 candidates, 3]
    alignment = torch.sum(candidates * direction[:, None, :], dim=-1).abs()  # [E, 3 candidates]
    best = torch.argmin(alignment, dim=1)  # first minimum on ties, as fairchem's strict comparisons
    return candidates[torch.arange(len(best), device=best.device), best]


def edge_rotation_matrix(
    vec: Tensor, *, perpendicular: Literal["deterministic", "random"] | Tensor = "deterministic"
) -> Tensor:
    r"""Rotations :math:`R` that map each edge direction onto :math:`\hat y`, as in fairchem's eSCN/EquiformerV2.

    See the module docstring for the construction and the choices of ``perpendicular``.

    Args:
        vec: edge vectors :math:`\vec r_{ij}`, shape ``[E, 3]``, any length unit.
        perpendicular: ``"deterministic"``, ``"random"`` (fairchem's ``torch.rand_like`` draw), or auxiliary
            vectors of shape ``[E, 3]`` and the dtype of ``vec``.

    Returns:
        Detached proper rotation matrices, shape ``[E, 3, 3]``, with ``R @ vec[e] / |vec[e]| = (0, 1, 0)``.

    Example:
        >>> import torch
        >>> vec = torch.tensor([[1.0, 2.0, 2.0]])
        >>> (edge_rotation_matrix(vec) @ vec[0] / 3.0).round(decimals=6)
        tensor([[0., 1., 0.]])
    """
    if vec.ndim != 2 or vec.shape[-1] != 3:
        raise ValueError(f"vec must have shape [E, 3], got {tuple(vec.shape)}")
    vec = vec.detach()
    length = torch.sqrt(torch.sum(vec**2, dim=-1))
    if not bool(torch.all(torch.isfinite(length) & (length >= MIN_EDGE_LENGTH))):
        raise ValueError(
            f"edge vectors must be finite and at least {MIN_EDGE_LENGTH} long to define a frame; "
            f"shortest: {length.min().item():.3g} (overlapping atoms?)"
        )
    direction = vec / length[:, None]
    if isinstance(perpendicular, Tensor):
        if perpendicular.shape != vec.shape or perpendicular.dtype != vec.dtype:
            raise ValueError(
                f"perpendicular must match vec in shape {tuple(vec.shape)} and dtype {vec.dtype}, got "
                f"{tuple(perpendicular.shape)} and {perpendicular.dtype}"
            )
        auxiliary = _guarded_auxiliary(direction, perpendicular.detach().to(vec.device))
    elif perpendicular == "random":
        auxiliary = _guarded_auxiliary(direction, torch.rand_like(vec) - 0.5)
    elif perpendicular == "deterministic":
        auxiliary = _least_aligned_axis(direction)
    else:
        raise ValueError(f"perpendicular must be 'deterministic', 'random' or a tensor, got {perpendicular!r}")
    roll_axis = _unit(torch.linalg.cross(direction, auxiliary, dim=-1))
    third_axis = _unit(torch.linalg.cross(roll_axis, direction, dim=-1))
    return torch.stack([roll_axis, direction, third_axis], dim=1)


def edge_wigner(
    vec: Tensor,
    lmax: int,
    *,
    perpendicular: Literal["deterministic", "random"] | Tensor = "deterministic",
) -> tuple[Tensor, Tensor]:
    r"""Wigner-D matrices of the edge frames: :math:`D(R)` rotates into the frame, :math:`D(R)^T` back.

    :math:`D(R) = \bigoplus_{l \le l_{max}} D^l(R)` with :math:`R` from :func:`edge_rotation_matrix`, as
    fairchem's ``SO3_Rotation`` builds it (Euler angles of :math:`R`, then per-degree blocks). After
    rotation, :math:`D(R)\, Y(\hat r)` is non-zero only at :math:`m = 0`.

    Args:
        vec: edge vectors, shape ``[E, 3]``.
        lmax: largest degree :math:`l_{max} \ge 0`.
        perpendicular: roll choice, see :func:`edge_rotation_matrix`.

    Returns:
        ``(wigner, wigner_inv)``, both detached, shape ``[E, K, K]`` with :math:`K = (l_{max}+1)^2`;
        ``wigner_inv`` is the transpose of ``wigner``.

    Example:
        >>> import torch
        >>> vec = torch.randn(4, 3, dtype=torch.float64)
        >>> wigner, wigner_inv = edge_wigner(vec, lmax=2)
        >>> wigner.shape
        torch.Size([4, 9, 9])
        >>> torch.allclose(wigner @ wigner_inv, torch.eye(9, dtype=torch.float64).expand(4, 9, 9))
        True
    """
    wigner = wigner_D_blocks(lmax, edge_rotation_matrix(vec, perpendicular=perpendicular))
    return wigner, wigner.transpose(-1, -2)
