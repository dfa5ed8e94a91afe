r"""Point-wise functions on the sphere: spherical channels sampled on an :math:`S^2` grid and projected back.

For coefficients :math:`x_{lm}` (reduced to :math:`|m| \le m_{max}`, see :mod:`zoo.nn.so3`) and a
:math:`(\beta, \alpha)` grid of :math:`n_\beta \times n_\alpha` points,

.. math::

    f(\beta, \alpha) = \sum_{lm} G_{\beta\alpha, lm}\, x_{lm}, \qquad
    x'_{lm} = \sum_{\beta\alpha} F_{\beta\alpha, lm}\, \sigma\big(f(\beta, \alpha)\big),

where :math:`G` and :math:`F` are e3nn's ``ToS2Grid`` and ``FromS2Grid`` as dense matrices (fairchem
``SO3_Grid``). A point-wise :math:`\sigma` commutes with rotations only up to the grid's quadrature error, so
these activations are equivariant to a small tolerance, not exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
from e3nn.o3 import FromS2Grid, ToS2Grid
from torch import Tensor, nn

from zoo.nn.so3 import CoefficientLayout

__all__ = ["GateActivation", "S2Activation", "S2Grid", "SeparableS2Activation", "SmoothLeakyReLU"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (e3nn builds its quadrature weights in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class S2Grid(nn.Module):
    r"""Dense maps between spherical coefficients and an :math:`S^2` grid (fairchem ``SO3_Grid``).

    The matrices ``to_grid_mat`` and ``from_grid_mat`` ``[n_beta, n_alpha, K_r]`` are derived constants: built
    in float64 (under a float64 default dtype, because e3nn computes ``FromS2Grid``'s quadrature weights in
    the default dtype and would otherwise round them to float32), never stored in a state dict, and cast to
    the dtype and device of the input on use (so a float64 model gets float64-exact grids whatever dtype it
    was built in).

    Args:
        lmax, mmax: degrees and orders of the coefficients (:math:`K_r` of :class:`CoefficientLayout`).
        resolution: :math:`n_\beta = n_\alpha`; ``None`` means :math:`n_\beta = 2(l_{max}+1)` and
            :math:`n_\alpha = 2m_{max}+1` (+2 when :math:`m_{max} = l_{max}`), fairchem's default.
        normalization: e3nn's ``"component"`` (EquiformerV2) or ``"integral"`` (eSCN).
        rescale: multiply degrees :math:`l > m_{max}` by :math:`\sqrt{(2l+1)/(2m_{max}+1)}` in both maps
            (EquiformerV2; eSCN does not).

    Example:
        >>> grid = S2Grid(2, 2, resolution=8)
        >>> x = torch.randn(3, 9, 4)
        >>> torch.allclose(grid.from_grid(grid.to_grid(x)), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        lmax: int,
        mmax: int,
        *,
        resolution: int | None = None,
        normalization: Literal["component", "integral"] = "component",
        rescale: bool = True,
    ) -> None:
        super().__init__()
        self.lmax, self.mmax = lmax, mmax
        if resolution is not None:
            res_beta = res_alpha = resolution
        else:
            res_beta = 2 * (lmax + 1)
            res_alpha = 2 * (mmax + 1) + 1 if lmax == mmax else 2 * mmax + 1
        self.resolution = (res_beta, res_alpha)
        layout = CoefficientLayout(lmax, mmax)
        scale = torch.ones((lmax + 1) ** 2, dtype=torch.float64)
        if rescale:
            for l in range(mmax + 1, lmax + 1):
                scale[l * l : (l + 1) * (l + 1)] = math.sqrt((2 * l + 1) / (2 * mmax + 1))
        with _default_dtype(torch.float64):
            to_grid = ToS2Grid(lmax, self.resolution, normalization=normalization, dtype=torch.float64)
            from_grid = FromS2Grid(self.resolution, lmax, normalization=normalization, dtype=torch.float64)
        to_grid_mat = torch.einsum("mbi, am -> bai", to_grid.shb, to_grid.sha) * scale
        from_grid_mat = torch.einsum("am, mbi -> bai", from_grid.sha, from_grid.shb) * scale
        self.to_grid_mat = to_grid_mat[:, :, layout.reduced].contiguous()
        self.from_grid_mat = from_grid_mat[:, :, layout.reduced].contiguous()
        self._cast: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def matrices(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(to_grid_mat, from_grid_mat)`` in the dtype and on the device of ``like`` (cached)."""
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = (self.to_grid_mat.to(like), self.from_grid_mat.to(like))
        return self._cast[key]

    def to_grid(self, x: Tensor) -> Tensor:
        """``[N, K_r, C]`` -> values on the grid ``[N, n_beta, n_alpha, C]``."""
        return torch.einsum("bai, zic -> zbac", self.matrices(x)[0], x)

    def from_grid(self, grid: Tensor) -> Tensor:
        """``[N, n_beta, n_alpha, C]`` -> coefficients ``[N, K_r, C]``."""
        return torch.einsum("bai, zbac -> zic", self.matrices(grid)[1], grid)

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, mmax={self.mmax}, resolution={self.resolution}"


class SmoothLeakyReLU(nn.Module):
    r""":math:`\frac{1+a}{2} x + \frac{1-a}{2} x\,(2\sigma(x) - 1)`, a smooth leaky ReLU with slope :math:`a` at
    :math:`-\infty` (EquiformerV2's attention activation)."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        a = self.negative_slope
        return ((1 + a) / 2) * x + ((1 - a) / 2) * x * (2 * torch.sigmoid(x) - 1)


class S2Activation(nn.Module):
    r"""SiLU applied point-wise on the sphere: :math:`x \mapsto F\,\mathrm{SiLU}(G x)`, ``[N, K_r, C]``."""

    def __init__(self, grid: S2Grid) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: Tensor) -> Tensor:
        return self.grid.from_grid(nn.functional.silu(self.grid.to_grid(x)))


class SeparableS2Activation(nn.Module):
    r"""EquiformerV2's separable S2 activation: degree 0 from separate scalars, degrees :math:`l > 0` from the
    S2 activation of all coefficients.

    .. math:: y_0 = \mathrm{SiLU}(g), \qquad y_{l>0} = \big[F\, \mathrm{SiLU}(G x)\big]_{l>0}

    Shapes: ``scalars [N, C]``, ``x [N, K_r, C]`` -> ``[N, K_r, C]``.
    """

    def __init__(self, grid: S2Grid) -> None:
        super().__init__()
        self.s2_act = S2Activation(grid)

    def forward(self, scalars: Tensor, x: Tensor) -> Tensor:
        tensors = self.s2_act(x)
        return torch.cat([nn.functional.silu(scalars)[:, None, :], tensors[:, 1:]], dim=1)


class GateActivation(nn.Module):
    r"""Gate activation: :math:`y_0 = \mathrm{SiLU}(x_0)`, :math:`y_{lm} = \sigma(g_l)\, x_{lm}` for :math:`l > 0`.

    Shapes: ``gates [N, l_max * C]`` (one gate per degree and channel), ``x [N, K_r, C]`` -> ``[N, K_r, C]``,
    where the reduced layout keeps :math:`\min(2l+1, 2m_{max}+1)` orders of degree :math:`l`.
    """

    def __init__(self, lmax: int, mmax: int, num_channels: int) -> None:
        super().__init__()
        self.lmax, self.num_channels = lmax, num_channels
        sizes = torch.tensor([min(2 * l + 1, 2 * mmax + 1) for l in range(1, lmax + 1)])
        self.register_buffer("expand_index", torch.repeat_interleave(torch.arange(lmax), sizes), persistent=False)

    def forward(self, gates: Tensor, x: Tensor) -> Tensor:
        gates = torch.sigmoid(gates).reshape(gates.shape[0], self.lmax, self.num_channels)[:, self.expand_index]
        return torch.cat([nn.functional.silu(x[:, :1]), x[:, 1:] * gates], dim=1)
