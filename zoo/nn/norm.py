r"""Equivariant normalisation of spherical channels ``[N, K, C]``, :math:`K = (l_{max}+1)^2` (EquiformerV2).

Degree 0 may be centred and shifted; every degree :math:`l > 0` is only scaled, by a factor shared by its
:math:`2l+1` orders, so the layers commute with rotations exactly. Three variants, fairchem's ``norm_type``:

* ``"layer_norm"`` (:class:`EquivariantLayerNorm`): each degree normalised on its own;
* ``"layer_norm_sh"`` (:class:`EquivariantLayerNormSH`): ``LayerNorm`` on :math:`l = 0`, one RMS over all
  :math:`l > 0` with each degree weighted :math:`1/(2l+1)`;
* ``"rms_norm_sh"`` (:class:`EquivariantRMSNormSH`): one RMS over all degrees after centring :math:`l = 0`.

Each divides by :math:`\sqrt{\cdot + \epsilon}` and multiplies by a learned weight per degree and channel.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from zoo.nn.so3 import degree_index

__all__ = ["EquivariantLayerNorm", "EquivariantLayerNormSH", "EquivariantRMSNormSH", "NormType", "equivariant_norm"]

NormType = Literal["layer_norm", "layer_norm_sh", "rms_norm_sh"]


def _degree_balance(lmax: int, first: int) -> Tensor:
    r"""``[K - first^2, 1]`` weights :math:`1 / ((2l+1)(l_{max} + 1 - \text{first}))` of degrees :math:`l \ge` first."""
    degree = degree_index(lmax)[first * first :]
    return (1.0 / ((2 * degree + 1) * (lmax + 1 - first))).to(torch.float64)[:, None]


class EquivariantLayerNorm(nn.Module):
    r"""Per-degree layer norm (fairchem ``EquivariantLayerNormArray``).

    .. math::

        y_l = \frac{x_l - \delta_{l0}\,\bar x_0}{\sqrt{\langle (x_l - \delta_{l0}\bar x_0)^2 \rangle_{m,c}
        + \epsilon}}\; w_l + \delta_{l0}\, b

    Parameters ``affine_weight [l_max + 1, C]``, ``affine_bias [C]``. Shapes ``[N, K, C]`` -> ``[N, K, C]``.
    """

    def __init__(self, lmax: int, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.num_channels, self.eps = lmax, num_channels, eps
        self.affine_weight = nn.Parameter(torch.ones(lmax + 1, num_channels))
        self.affine_bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = []
        for l in range(self.lmax + 1):
            feature = x[:, l * l : (l + 1) * (l + 1)]
            if l == 0:
                feature = feature - feature.mean(dim=2, keepdim=True)
            norm = feature.pow(2).mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)  # [N, 1, 1]
            feature = feature * ((norm + self.eps).pow(-0.5) * self.affine_weight[l])
            out.append(feature + self.affine_bias if l == 0 else feature)
        return torch.cat(out, dim=1)


class EquivariantLayerNormSH(nn.Module):
    r"""``LayerNorm`` on degree 0, one degree-balanced RMS over degrees :math:`l > 0`
    (fairchem ``EquivariantLayerNormArraySphericalHarmonics``).

    .. math::

        y_0 = \mathrm{LayerNorm}(x_0), \qquad
        y_{l>0} = \frac{x_l\, w_l}{\sqrt{\frac{1}{l_{max}} \sum_{l' > 0} \frac{1}{2l'+1}
        \langle \lVert x_{l'} \rVert_m^2 \rangle_c + \epsilon}}

    Parameters ``norm_l0.weight``, ``norm_l0.bias`` ``[C]`` and ``affine_weight [l_max, C]``.
    Shapes ``[N, K, C]`` -> ``[N, K, C]``.
    """

    def __init__(self, lmax: int, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.num_channels, self.eps = lmax, num_channels, eps
        self.norm_l0 = nn.LayerNorm(num_channels, eps=eps)
        self.affine_weight = nn.Parameter(torch.ones(lmax, num_channels))
        self.balance_degree_weight = _degree_balance(lmax, 1)  # float64 constant, cast on use
        self.register_buffer("expand_index", degree_index(lmax)[1:] - 1, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        scalars = self.norm_l0(x[:, :1])
        if self.lmax == 0:
            return scalars
        feature = x[:, 1:]
        norm = torch.einsum("nic, ia -> nac", feature.pow(2), self.balance_degree_weight.to(feature))  # [N, 1, C]
        norm = (norm.mean(dim=2, keepdim=True) + self.eps).pow(-0.5)  # [N, 1, 1]
        return torch.cat([scalars, feature * (norm * self.affine_weight[self.expand_index])], dim=1)


class EquivariantRMSNormSH(nn.Module):
    r"""Degree-balanced RMS norm over all degrees, degree 0 centred (fairchem
    ``EquivariantRMSNormArraySphericalHarmonicsV2``).

    .. math::

        \tilde x = x - \delta_{l0}\, \bar x_0, \qquad
        y_l = \frac{\tilde x_l\, w_l}{\sqrt{\frac{1}{l_{max}+1} \sum_{l'} \frac{1}{2l'+1}
        \langle \lVert \tilde x_{l'} \rVert_m^2 \rangle_c + \epsilon}} + \delta_{l0}\, b

    Parameters ``affine_weight [l_max + 1, C]``, ``affine_bias [C]``. Shapes ``[N, K, C]`` -> ``[N, K, C]``.
    """

    def __init__(self, lmax: int, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.num_channels, self.eps = lmax, num_channels, eps
        self.affine_weight = nn.Parameter(torch.ones(lmax + 1, num_channels))
        self.affine_bias = nn.Parameter(torch.zeros(num_channels))
        self.balance_degree_weight = _degree_balance(lmax, 0)  # float64 constant, cast on use
        self.register_buffer("expand_index", degree_index(lmax), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        scalars = x[:, :1]
        feature = torch.cat([scalars - scalars.mean(dim=2, keepdim=True), x[:, 1:]], dim=1)
        norm = torch.einsum("nic, ia -> nac", feature.pow(2), self.balance_degree_weight.to(feature))  # [N, 1, C]
        norm = (norm.mean(dim=2, keepdim=True) + self.eps).pow(-0.5)  # [N, 1, 1]
        out = feature * (norm * self.affine_weight[self.expand_index])
        return torch.cat([out[:, :1] + self.affine_bias, out[:, 1:]], dim=1)


_NORMS: dict[str, type[nn.Module]] = {
    "layer_norm": EquivariantLayerNorm,
    "layer_norm_sh": EquivariantLayerNormSH,
    "rms_norm_sh": EquivariantRMSNormSH,
}


def equivariant_norm(norm_type: NormType, lmax: int, num_channels: int) -> nn.Module:
    """The normalisation layer named by fairchem's ``norm_type``."""
    if norm_type not in _NORMS:
        raise ValueError(f"norm_type must be one of {sorted(_NORMS)}, got {norm_type!r}")
    return _NORMS[norm_type](lmax, num_channels)
