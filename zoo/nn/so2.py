r"""SO(2) convolutions of edge-aligned spherical channels (eSCN, EquiformerV2).

In an edge's frame (:mod:`zoo.nn.so3`) a rotation-equivariant linear map of the coefficients reduces to a
complex multiplication per order :math:`m` (Passaro and Zitnick, ICML 2023):

.. math::

    y_{m=0} = W_0\, x_{m=0}, \qquad
    \begin{pmatrix} y_{+m} \\ y_{-m} \end{pmatrix} =
    \begin{pmatrix} W^r_m & -W^i_m \\ W^i_m & W^r_m \end{pmatrix}
    \begin{pmatrix} x_{+m} \\ x_{-m} \end{pmatrix},

where :math:`x_{\pm m}` stacks the :math:`l_{max} - m + 1` degrees of order :math:`\pm m` of all channels, and
the inputs are optionally scaled edge-wise by a radial function of invariant edge features first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo.nn.so3 import CoefficientLayout

__all__ = ["RadialMLP", "SO2Convolution", "SO2OrderLinear"]


class RadialMLP(nn.Module):
    r"""``Linear -> LayerNorm -> SiLU`` repeated, then a last ``Linear`` (fairchem ``RadialFunction``).

    Args:
        channels: widths ``[in, hidden..., out]``; the submodule ``net`` is named as upstream.

    Example:
        >>> RadialMLP([8, 16, 16, 4])(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(channels)):
            layers.append(nn.Linear(width_in, width_out))
            if index < len(channels) - 2:
                layers += [nn.LayerNorm(width_out), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SO2OrderLinear(nn.Module):
    r"""The complex multiplication of one order :math:`m > 0` (fairchem ``SO2_m_Convolution``).

    ``fc`` maps the :math:`n = (l_{max}-m+1) C_{in}` inputs of each of :math:`\pm m` to
    :math:`2 n_{out}` outputs, read as :math:`(W^r x, W^i x)`; it is initialised scaled by :math:`1/\sqrt 2`.

    Shapes: ``[E, 2, n]`` (rows :math:`+m`, :math:`-m`) -> ``[E, 2, n_out]``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 2 * out_features, bias=False)
        with torch.no_grad():
            self.fc.weight.mul_(1 / math.sqrt(2))

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(x)
        half = self.fc.out_features // 2
        real, imag = out[..., :half], out[..., half:]
        return torch.stack([real[:, 0] - imag[:, 1], real[:, 1] + imag[:, 0]], dim=1)


class SO2Convolution(nn.Module):
    r"""SO(2) convolution of all orders :math:`m \le m_{max}` (fairchem EquiformerV2 ``SO2_Convolution``).

    Submodules (upstream names): ``fc_m0`` (with bias), ``so2_m_conv[m-1]`` (:class:`SO2OrderLinear`) and, when
    ``edge_channels`` is given, ``rad_func`` (:class:`RadialMLP`) whose output scales the inputs of every order.

    Args:
        in_channels: :math:`C_{in}` per coefficient.
        out_channels: :math:`C_{out}` per coefficient.
        layout: the :math:`(l_{max}, m_{max})` layout.
        edge_channels: widths ``[in, hidden...]`` of the radial function, or ``None`` for edge-independent
            weights.
        extra_m0_channels: extra outputs of ``fc_m0`` returned separately (attention logits, gates).

    Shapes:
        ``x [E, K_r, C_in]`` (reduced, degree-major, in the edge frames), ``edge_features [E, F]`` ->
        ``[E, K_r, C_out]`` and, with ``extra_m0_channels``, ``[E, extra_m0_channels]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: CoefficientLayout,
        *,
        edge_channels: Sequence[int] | None = None,
        extra_m0_channels: int = 0,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.in_channels, self.out_channels, self.extra_m0_channels = in_channels, out_channels, extra_m0_channels
        sizes = layout.order_sizes
        self.fc_m0 = nn.Linear(sizes[0] * in_channels, sizes[0] * out_channels + extra_m0_channels)
        self.so2_m_conv = nn.ModuleList(
            SO2OrderLinear(sizes[m] * in_channels, sizes[m] * out_channels) for m in range(1, layout.mmax + 1)
        )
        self.rad_func = None
        if edge_channels is not None:
            self.rad_func = RadialMLP([*edge_channels, sum(sizes[m] for m in range(len(sizes))) * in_channels])
        self.register_buffer("to_order_major", layout.to_order_major, persistent=False)
        self.register_buffer("to_degree_major", layout.to_degree_major, persistent=False)

    def forward(self, x: Tensor, edge_features: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        num_edges = x.shape[0]
        sizes = self.layout.order_sizes
        x = x[:, self.to_order_major]  # order-major: m=0, +1, -1, +2, -2, ...
        radial = self.rad_func(edge_features) if self.rad_func is not None else None
        x_0 = x[:, : sizes[0]].reshape(num_edges, -1)
        if radial is not None:
            x_0 = x_0 * radial[:, : x_0.shape[1]]
        x_0 = self.fc_m0(x_0)
        extra = x_0[:, : self.extra_m0_channels]
        out = [x_0[:, self.extra_m0_channels :].reshape(num_edges, -1, self.out_channels)]
        offset, offset_radial = sizes[0], sizes[0] * self.in_channels
        for m, conv in enumerate(self.so2_m_conv, start=1):
            width = sizes[m] * self.in_channels
            x_m = x[:, offset : offset + 2 * sizes[m]].reshape(num_edges, 2, -1)
            if radial is not None:
                x_m = x_m * radial[:, None, offset_radial : offset_radial + width]
            out.append(conv(x_m).reshape(num_edges, -1, self.out_channels))
            offset, offset_radial = offset + 2 * sizes[m], offset_radial + width
        y = torch.cat(out, dim=1)[:, self.to_degree_major]
        return (y, extra) if self.extra_m0_channels else y
