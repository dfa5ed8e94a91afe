r"""Real spherical harmonics and Wigner-D matrices in e3nn's basis.

Everything here follows e3nn's conventions (the ones eSCN, EquiformerV2 and Equiformer were trained with):

* :math:`y` is the polar axis: :math:`Y^l(\hat y)` is zero except for its :math:`m = 0` entry;
* the :math:`2l+1` entries of degree :math:`l` are ordered :math:`m = -l, \dots, l`, and the coefficients of
  all degrees up to :math:`l_{max}` are concatenated, :math:`K = (l_{max}+1)^2` in all;
* :math:`Y^1(\vec r) \propto (x, y, z)`, so :math:`D^1(R) = R`;
* Euler angles :math:`(\alpha, \beta, \gamma)` mean :math:`R = R_y(\alpha) R_x(\beta) R_y(\gamma)`
  (``e3nn.o3.angles_to_matrix``), and :math:`Y(R \vec r) = D(R)\, Y(\vec r)`.

:func:`wigner_D` evaluates :math:`D^l(\alpha, \beta, \gamma) = Z(\alpha)\, J\, Z(\beta)\, J\, Z(\gamma)`,
where :math:`Z(\theta) = D^l(R_y(\theta))` is built from cosines and sines of :math:`m\theta` and
:math:`J = D^l(P)` is the representation of the half-turn :math:`P` about :math:`(\hat x + \hat y)/\sqrt 2`,
which conjugates :math:`R_y(\beta)` into :math:`R_x(\beta)`. This is the factorisation fairchem uses for eSCN
and EquiformerV2, so float32 results follow the same sequence of operations. ``e3nn.o3.wigner_D`` (0.5, 0.6)
computes the same matrices with ``matrix_exp`` of generators it builds in the *default* dtype, which makes
its float64 output accurate to only about :math:`10^{-6}` at :math:`l = 8` and slower; here :math:`J` is
derived once in float64 from e3nn's spherical harmonics and cast to the dtype of the angles.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3
from torch import Tensor

__all__ = ["spherical_harmonics", "wigner_D", "wigner_D_blocks"]

# Half-turn about (x + y) / sqrt(2): (x, y, z) -> (y, x, -z). P = P^T = P^-1 and P R_y(b) P = R_x(b).
_HALF_TURN_XY = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0))


def spherical_harmonics(lmax: int, vec: Tensor, *, normalize: bool = True, normalization: str = "component") -> Tensor:
    r"""Real spherical harmonics of all degrees :math:`0 \le l \le l_{max}`, in e3nn's basis.

    A thin wrapper over ``e3nn.o3.spherical_harmonics`` with :math:`y` as the polar axis.

    With ``normalization="component"`` each degree has :math:`\|Y^l(\hat r)\|^2 = 2l+1`; ``"norm"`` gives
    :math:`\|Y^l\| = 1` and ``"integral"`` gives :math:`\int_{S^2} (Y^l_m)^2 = 1`.

    Args:
        lmax: largest degree :math:`l_{max} \ge 0` (e3nn implements :math:`l \le 12`).
        vec: vectors, shape ``[..., 3]``.
        normalize: evaluate on :math:`\vec r / |\vec r|` (``False``: the homogeneous polynomials of
            :math:`\vec r`).
        normalization: ``"component"``, ``"norm"`` or ``"integral"``.

    Returns:
        Tensor of shape ``[..., (lmax + 1) ** 2]``, degree-major, :math:`m = -l, \dots, l` within a degree.

    Example:
        >>> import torch
        >>> spherical_harmonics(1, torch.tensor([[0.0, 2.0, 0.0]]))
        tensor([[1.0000, 0.0000, 1.7321, 0.0000]])
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if vec.shape[-1:] != (3,):
        raise ValueError(f"vec must have shape [..., 3], got {tuple(vec.shape)}")
    return o3.spherical_harmonics(list(range(lmax + 1)), vec, normalize=normalize, normalization=normalization)


@functools.cache
def _half_turn_wigner(l: int) -> Tensor:
    r""":math:`J = D^l(P)` for the half-turn :math:`P` about :math:`(\hat x + \hat y)/\sqrt 2`, float64 CPU.

    Solved by least squares from :math:`Y^l(P \vec r_k) = J\, Y^l(\vec r_k)` at fixed sample points.
    """
    generator = torch.Generator().manual_seed(l)
    points = torch.randn(4 * (2 * l + 1), 3, generator=generator, dtype=torch.float64)
    half_turn = torch.tensor(_HALF_TURN_XY, dtype=torch.float64)
    sh = o3.spherical_harmonics(l, points, normalize=True)  # [n, 2l+1]
    sh_turned = o3.spherical_harmonics(l, points @ half_turn.T, normalize=True)  # [n, 2l+1] = sh @ J^T
    return torch.linalg.lstsq(sh, sh_turned).solution.T.contiguous()


@functools.cache
def _half_turn_wigner_on(l: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`_half_turn_wigner` in ``dtype`` on ``device``, copied there once: a copy from pageable host memory
    waits for the device's queue, so one per call would be a host-device sync in every forward pass."""
    return _half_turn_wigner(l).to(dtype=dtype, device=device)


def _y_rotation_wigner(l: int, angle: Tensor) -> Tensor:
    r""":math:`D^l(R_y(\theta))`, shape ``[..., 2l+1, 2l+1]``.

    In e3nn's basis the row of order :math:`m` holds :math:`\cos(m\theta)` on the diagonal and
    :math:`-\sin(m\theta)` in the column of order :math:`-m`.
    """
    order = torch.arange(-l, l + 1, dtype=angle.dtype, device=angle.device)
    phase = angle[..., None] * order  # [..., 2l+1]
    return torch.diag_embed(torch.cos(phase)) + torch.diag_embed(-torch.sin(phase)).flip(-1)


def wigner_D(l: int, alpha: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
    r"""Wigner-D matrix :math:`D^l(\alpha, \beta, \gamma)` of :math:`R = R_y(\alpha) R_x(\beta) R_y(\gamma)`.

    Same matrices as ``e3nn.o3.wigner_D`` (real basis, :math:`Y^l(R\vec r) = D^l(R)\, Y^l(\vec r)`),
    computed as :math:`Z(\alpha)\, J\, Z(\beta)\, J\, Z(\gamma)` in the dtype of the angles (see the module
    docstring).

    Args:
        l: degree, :math:`0 \le l \le 12`.
        alpha: rotation about :math:`y` applied last, shape ``[...]`` (broadcast with the others).
        beta: rotation about :math:`x` applied second, shape ``[...]``.
        gamma: rotation about :math:`y` applied first, shape ``[...]``.

    Returns:
        Orthogonal matrices, shape ``[..., 2l+1, 2l+1]``.

    Example:
        >>> import torch
        >>> from e3nn import o3
        >>> angles = torch.rand(3, dtype=torch.float64)
        >>> torch.allclose(wigner_D(1, *angles), o3.angles_to_matrix(*angles))
        True
    """
    if l < 0:
        raise ValueError(f"l must be >= 0, got {l}")
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    half_turn = _half_turn_wigner_on(l, alpha.dtype, alpha.device)
    return (
        _y_rotation_wigner(l, alpha)
        @ half_turn
        @ _y_rotation_wigner(l, beta)
        @ half_turn
        @ _y_rotation_wigner(l, gamma)
    )


def wigner_D_blocks(lmax: int, rotation: Tensor) -> Tensor:
    r"""Block-diagonal Wigner-D matrix :math:`\bigoplus_{l=0}^{l_{max}} D^l(R)` of rotation matrices.

    The angles come from ``e3nn.o3.matrix_to_angles`` (which asserts :math:`\det R = 1`), the blocks from
    :func:`wigner_D`. For :math:`R` mapping a vector onto :math:`\pm\hat y` the Euler angles are singular
    (gimbal lock): the values stay exact but gradients through ``rotation`` are not finite there.

    Args:
        lmax: largest degree :math:`l_{max} \ge 0`.
        rotation: proper rotation matrices, shape ``[..., 3, 3]``.

    Returns:
        Tensor of shape ``[..., K, K]`` with :math:`K = (l_{max}+1)^2`, zero outside the diagonal blocks, in the
        dtype of ``rotation``; it acts on coefficients laid out as :func:`spherical_harmonics` returns them.

    Example:
        >>> import torch
        >>> from e3nn import o3
        >>> rotation = o3.rand_matrix(5, dtype=torch.float64)
        >>> vec = torch.randn(5, 3, dtype=torch.float64)
        >>> rotated = spherical_harmonics(2, (rotation @ vec[:, :, None])[..., 0])
        >>> torch.allclose(rotated, (wigner_D_blocks(2, rotation) @ spherical_harmonics(2, vec)[..., None])[..., 0])
        True
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape [..., 3, 3], got {tuple(rotation.shape)}")
    alpha, beta, gamma = o3.matrix_to_angles(rotation)
    size = (lmax + 1) ** 2
    blocks = rotation.new_zeros((*rotation.shape[:-2], size, size))
    for l in range(lmax + 1):
        start, stop = l * l, (l + 1) * (l + 1)
        blocks[..., start:stop, start:stop] = wigner_D(l, alpha, beta, gamma)
    return blocks
