r"""Spherical-channel features :math:`x \in \mathbb{R}^{N \times K \times C}` and the SO(3) operations on them.

A node (or edge) carries :math:`C` channels of real spherical-harmonic coefficients of all degrees
:math:`l \le l_{max}`, :math:`K = (l_{max}+1)^2` in all, in e3nn's order (degree-major, :math:`m = -l..l`; see
:mod:`zoo.geometry.spherical`). eSCN and EquiformerV2 rotate each edge's features into a frame whose
:math:`\hat y` axis is the edge (:func:`zoo.geometry.edge_wigner`), keep only the orders
:math:`|m| \le m_{max}` there, and rotate back:

.. math::

    \tilde x_e = D(R_e)_{[\mathcal{M}, :]}\; x, \qquad
    x_e = D(R_e)^T_{[:, \mathcal{M}]}\, \mathrm{diag}(s)\; \tilde x_e,
    \qquad s_{lm} = \begin{cases} 1 & l \le m_{max} \\ \sqrt{(2l+1)/(2m_{max}+1)} & l > m_{max}\end{cases}

with :math:`\mathcal{M}` the :math:`K_r` coefficients with :math:`|m| \le m_{max}` ("reduced" layout, still
degree-major). The factor :math:`s` (fairchem's ``rotate_inv_rescale``) restores the norm of a degree that lost
orders. The SO(2) convolutions work in the order-major layout: all :math:`m = 0` coefficients
(:math:`l = 0..l_{max}`), then :math:`m = +1` (:math:`l = 1..l_{max}`), :math:`m = -1`, :math:`m = +2`, ...
(fairchem's ``CoefficientMappingModule.to_m``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.geometry import edge_wigner

__all__ = ["CoefficientLayout", "EdgeRotation", "LazyEdgeRotation", "SO3Linear", "degree_index"]


def degree_index(lmax: int) -> Tensor:
    r"""Degree :math:`l` of each of the :math:`(l_{max}+1)^2` coefficients, shape ``[K]`` long.

    Example:
        >>> degree_index(1).tolist()
        [0, 1, 1, 1]
    """
    return torch.repeat_interleave(torch.arange(lmax + 1), torch.arange(lmax + 1) * 2 + 1)


class CoefficientLayout:
    r"""Index tables of the reduced (:math:`|m| \le m_{max}`) and order-major layouts of one :math:`l_{max}, m_{max}`.

    Attributes:
        lmax, mmax: the degrees and orders kept.
        reduced: ``[K_r]`` positions of the kept coefficients in the full degree-major layout.
        to_order_major: ``[K_r]`` permutation; ``x[:, to_order_major]`` turns a reduced degree-major tensor
            into order-major, and ``to_degree_major`` undoes it.
        order_sizes: number of degrees :math:`l_{max} - m + 1` with order :math:`m`, for :math:`m = 0..m_{max}`;
            in the order-major layout :math:`m = 0` takes ``order_sizes[0]`` rows and each :math:`m > 0` takes
            ``2 * order_sizes[m]`` (first :math:`+m`, then :math:`-m`).
        rescale: ``[K_r]`` the factor :math:`s` of the module docstring for each kept coefficient.

    Example:
        >>> layout = CoefficientLayout(2, 1)
        >>> layout.reduced.tolist(), layout.order_sizes
        ([0, 1, 2, 3, 5, 6, 7], [3, 2])
    """

    def __init__(self, lmax: int, mmax: int) -> None:
        if not 0 <= mmax <= lmax:
            raise ValueError(f"need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
        self.lmax, self.mmax = lmax, mmax
        degree = degree_index(lmax)
        order = torch.cat([torch.arange(-l, l + 1) for l in range(lmax + 1)])
        self.reduced = torch.nonzero(order.abs() <= mmax).flatten()
        reduced_degree, reduced_order = degree[self.reduced], order[self.reduced]
        groups = [torch.nonzero(reduced_order == 0).flatten()]
        for m in range(1, mmax + 1):
            groups += [torch.nonzero(reduced_order == m).flatten(), torch.nonzero(reduced_order == -m).flatten()]
        self.to_order_major = torch.cat(groups)
        self.to_degree_major = torch.argsort(self.to_order_major)
        self.order_sizes = [lmax - m + 1 for m in range(mmax + 1)]
        scale = [1.0 if l <= mmax else math.sqrt((2 * l + 1) / (2 * mmax + 1)) for l in range(lmax + 1)]
        self.rescale = torch.tensor(scale, dtype=torch.float64)[reduced_degree]
        self._on_device: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def on(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(reduced, rescale)`` on ``device`` (``rescale`` in ``dtype``), copied there once per device and dtype:
        a copy from pageable host memory waits for the device's queue (a host-device sync per forward pass)."""
        key = (device, dtype)
        if key not in self._on_device:
            self._on_device[key] = (self.reduced.to(device), self.rescale.to(device=device, dtype=dtype))
        return self._on_device[key]

    @property
    def num_reduced(self) -> int:
        """:math:`K_r`, the number of coefficients with :math:`|m| \\le m_{max}`."""
        return len(self.reduced)


@dataclass(frozen=True)
class EdgeRotation:
    r"""Per-edge Wigner matrices :math:`D(R_e)` and the rotations into and out of the edge frames.

    Build it with :meth:`from_wigner` from the output of :func:`zoo.geometry.edge_wigner`;
    ``rotation[edges]`` is the rotation of a subset of the edges (a slice or edge ids).

    Attributes:
        wigner_in: ``[E, K_r, K]`` rows :math:`\mathcal{M}` of :math:`D(R_e)`.
        wigner_out: ``[E, K, K_r]`` columns :math:`\mathcal{M}` of :math:`D(R_e)^T`, times :math:`s` (or not,
            see :meth:`from_wigner`).
    """

    wigner_in: Tensor
    wigner_out: Tensor

    @classmethod
    def from_wigner(cls, wigner: Tensor, layout: CoefficientLayout, *, rescale: bool = True) -> EdgeRotation:
        """Slice ``wigner [E, K, K]`` (:math:`K = (l_{max}+1)^2` of ``layout``) for rotations in and out.

        ``rescale``: multiply the rotation back by :math:`s` (EquiformerV2); eSCN rotates back without it.
        """
        reduced, scale = layout.on(wigner.device, wigner.dtype)
        wigner_out = wigner.transpose(1, 2)[:, :, reduced]
        if rescale:
            wigner_out = wigner_out * scale
        return cls(wigner[:, reduced, :], wigner_out)

    def __getitem__(self, edges: slice | Tensor) -> EdgeRotation:
        return EdgeRotation(self.wigner_in[edges], self.wigner_out[edges])

    def rotate(self, x: Tensor) -> Tensor:
        """``[E, K, C]`` -> ``[E, K_r, C]`` in the edge frames, orders :math:`|m| > m_{max}` dropped."""
        return torch.bmm(self.wigner_in, x)

    def rotate_back(self, x: Tensor) -> Tensor:
        """``[E, K_r, C]`` in the edge frames -> ``[E, K, C]`` in the global frame."""
        return torch.bmm(self.wigner_out, x)


class LazyEdgeRotation:
    r"""The :class:`EdgeRotation` of any subset of the edges, built when asked for from the edge vectors.

    ``lazy[edges]`` equals ``EdgeRotation.from_wigner(edge_wigner(vec, lmax, perpendicular=...)[0], layout)[edges]``
    but builds the Wigner matrices of those edges only, so that a layer processing its edges in chunks
    (:mod:`zoo.nn.chunking`) never holds them all (:math:`2 K_r K` numbers per edge, about 11 KB in float32
    at :math:`l_{max} = 6, m_{max} = 2`). Each call builds them again. With ``perpendicular="random"`` the
    auxiliary vectors are drawn once, here (``torch.rand_like(vec) - 0.5``, the draw of
    :func:`zoo.geometry.edge_rotation_matrix`), so every subset and every call use the same frames.

    Args:
        vec: ``[E, 3]`` edge vectors (detached here; the frames are constants).
        layout: the :math:`(l_{max}, m_{max})` layout.
        perpendicular: the roll of the frames, as :func:`zoo.geometry.edge_wigner` takes it.
        rescale: as :meth:`EdgeRotation.from_wigner`.

    Example:
        >>> vec = torch.randn(6, 3, dtype=torch.float64)
        >>> layout = CoefficientLayout(2, 1)
        >>> whole = EdgeRotation.from_wigner(edge_wigner(vec, 2)[0], layout)
        >>> torch.allclose(LazyEdgeRotation(vec, layout)[2:4].wigner_in, whole[2:4].wigner_in)
        True
    """

    def __init__(
        self,
        vec: Tensor,
        layout: CoefficientLayout,
        *,
        perpendicular: Literal["deterministic", "random"] | Tensor = "deterministic",
        rescale: bool = True,
    ) -> None:
        self.vec, self.layout, self.rescale = vec.detach(), layout, rescale
        if isinstance(perpendicular, Tensor) and perpendicular.shape != vec.shape:
            raise ValueError(
                f"perpendicular must match vec in shape {tuple(vec.shape)}, got {tuple(perpendicular.shape)}"
            )
        if isinstance(perpendicular, str) and perpendicular == "random":
            perpendicular = torch.rand_like(self.vec) - 0.5
        self.perpendicular = perpendicular

    def __getitem__(self, edges: slice | Tensor) -> EdgeRotation:
        perpendicular = self.perpendicular if isinstance(self.perpendicular, str) else self.perpendicular[edges]
        wigner, _ = edge_wigner(self.vec[edges], self.layout.lmax, perpendicular=perpendicular)
        return EdgeRotation.from_wigner(wigner, self.layout, rescale=self.rescale)


class SO3Linear(nn.Module):
    r"""Degree-wise linear map of spherical channels (fairchem ``SO3_LinearV2``).

    .. math:: y_{lm} = W_l\, x_{lm} + \delta_{l0}\, b

    Parameters ``weight [l_max + 1, C_out, C_in]`` and ``bias [C_out]``; the degree lookup is rebuilt, not stored.

    Shapes: ``[N, K, C_in]`` -> ``[N, K, C_out]``.

    Example:
        >>> SO3Linear(4, 3, lmax=2)(torch.randn(5, 9, 4)).shape
        torch.Size([5, 9, 3])
    """

    def __init__(self, in_features: int, out_features: int, lmax: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.lmax = in_features, out_features, lmax
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(lmax + 1, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("expand_index", degree_index(lmax), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight[self.expand_index]  # [K, C_out, C_in]
        out = torch.einsum("bmi, moi -> bmo", x, weight)
        return torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lmax={self.lmax}"
