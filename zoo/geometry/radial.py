r"""Radial bases: expansions of an interatomic distance :math:`r` into :math:`K` features.

Each class reproduces an upstream module value for value, with the same parameter and buffer names so that
upstream state dicts load unchanged (modulo the prefix of the enclosing model):

============================  ====================================================  ======================
class                         upstream                                              state dict
============================  ====================================================  ======================
:class:`GaussianSmearing`     SchNet (PyG), fairchem ``scn/smearing.py``             ``offset``
:class:`BesselBasis`          DimeNet; fairchem GemNet ``SphericalBesselBasis``      ``frequencies``
:class:`ExpNormalSmearing`    TorchMD-Net, Equiformer v1 ``nets/expnorm_rbf.py``     ``means``, ``betas``
:class:`GaussianRadialBasis`  Equiformer v1 / fairchem ``GaussianRadialBasisLayer``  ``mean``, ``std``,
                                                                                    ``weight``, ``bias``
============================  ====================================================  ======================

All take distances of any shape ``[...]`` and return ``[..., K]``. Initial values are computed in the default
dtype, as upstream does (float32 unless changed).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.geometry.envelope import CosineCutoff

__all__ = ["BesselBasis", "ExpNormalSmearing", "GaussianRadialBasis", "GaussianSmearing"]


class GaussianSmearing(nn.Module):
    r"""Fixed Gaussians on evenly spaced centres (SchNet; fairchem ``GaussianSmearing``).

    .. math::

        \phi_k(r) = \exp\!\big(c\,(r - \mu_k)^2\big), \qquad
        \mu_k = \mathrm{linspace}(\text{start}, \text{stop}, K)_k, \qquad
        c = -\frac{1}{2\,(s\,(\mu_1 - \mu_0))^2},

    with :math:`s` = ``basis_width_scalar``. The centres are the buffer ``offset`` (the only state-dict entry,
    as upstream); :math:`c` is the plain float attribute ``coeff``, derived from the centres as stored in the
    default dtype, exactly as upstream derives it.

    Args:
        start: first centre :math:`\mu_0`.
        stop: last centre :math:`\mu_{K-1}`.
        num_gaussians: :math:`K \ge 2`.
        basis_width_scalar: :math:`s > 0`, the width in units of the centre spacing.

    Example:
        >>> import torch
        >>> GaussianSmearing(0.0, 4.0, 5)(torch.tensor([2.0])).round(decimals=4)
        tensor([[0.1353, 0.6065, 1.0000, 0.6065, 0.1353]])
    """

    offset: Tensor

    def __init__(self, start: float, stop: float, num_gaussians: int, basis_width_scalar: float = 1.0) -> None:
        super().__init__()
        if num_gaussians < 2:
            raise ValueError(f"num_gaussians must be >= 2, got {num_gaussians}")
        if basis_width_scalar <= 0:
            raise ValueError(f"basis_width_scalar must be > 0, got {basis_width_scalar}")
        self.num_gaussians = num_gaussians
        offset = torch.linspace(start, stop, num_gaussians)
        width = (basis_width_scalar * (offset[1] - offset[0])).item()
        self.coeff: float = -0.5 / width**2
        self.register_buffer("offset", offset)

    def forward(self, dist: Tensor) -> Tensor:
        return torch.exp(self.coeff * (dist[..., None] - self.offset) ** 2)

    def extra_repr(self) -> str:
        return f"num_gaussians={self.num_gaussians}, coeff={self.coeff:.6g}"


class BesselBasis(nn.Module):
    r"""Radial Bessel basis of DimeNet (the spherical Bessel function :math:`j_0` with zeros at the cutoff).

    .. math::

        \phi_n(r) = \sqrt{\frac{2}{r_c}}\; \frac{\sin(\omega_n r / r_c)}{r}, \qquad
        \omega_n = n\pi, \quad n = 1, \dots, K,

    evaluated as fairchem's GemNet ``SphericalBesselBasis`` does (on :math:`x = r \cdot (1/r_c)`, as
    :math:`\sqrt{2/r_c^3}\,\sin(\omega_n x)/x`). The frequencies :math:`\omega_n` are the parameter (or, with
    ``trainable=False``, the buffer) ``frequencies``. Multiply by a :class:`~zoo.geometry.envelope.PolynomialEnvelope`
    to get GemNet's ``RadialBasis(rbf={"name": "spherical_bessel"})`` used by Equiformer v1. NequIP's
    ``BesselBasis`` has the prefactor :math:`2/r_c` instead of :math:`\sqrt{2/r_c}`. Requires :math:`r > 0`.

    Args:
        cutoff: :math:`r_c > 0`.
        num_basis: :math:`K \ge 1`.
        trainable: learn the frequencies.

    Example:
        >>> import torch
        >>> BesselBasis(cutoff=5.0, num_basis=3)(torch.tensor([1.0, 2.5])).shape
        torch.Size([2, 3])
    """

    frequencies: Tensor

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = False) -> None:
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.cutoff = float(cutoff)
        self.num_basis = num_basis
        self.inv_cutoff = 1.0 / self.cutoff
        self.norm_const = math.sqrt(2.0 / self.cutoff**3)
        frequencies = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, dist: Tensor) -> Tensor:
        scaled = (dist * self.inv_cutoff)[..., None]
        return self.norm_const / scaled * torch.sin(self.frequencies * scaled)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}"


class ExpNormalSmearing(nn.Module):
    r"""Exponential-normal basis of PhysNet as in TorchMD-Net and Equiformer v1 (``nets/expnorm_rbf.py``).

    .. math::

        \phi_k(r) = f_{\cos}(r)\, \exp\!\Big(-\beta_k \big(e^{\alpha (r_{lo} - r)} - \mu_k\big)^2\Big), \qquad
        \alpha = \frac{5}{r_{hi} - r_{lo}},

    with the :class:`~zoo.geometry.envelope.CosineCutoff` :math:`f_{\cos}` at :math:`r_{hi}` (upstream
    ignores :math:`r_{lo}` in the cutoff, and so does this), initial centres
    :math:`\mu_k = \mathrm{linspace}(e^{r_{lo} - r_{hi}}, 1, K)_k` and widths
    :math:`\beta_k = \big(\tfrac{2}{K}(1 - e^{r_{lo} - r_{hi}})\big)^{-2}`. ``means`` and ``betas`` are
    parameters when ``trainable``, else buffers (upstream's default, and what Equiformer v1 uses).

    Args:
        cutoff_lower: :math:`r_{lo}`.
        cutoff_upper: :math:`r_{hi} > r_{lo}`.
        num_rbf: :math:`K \ge 1`.
        trainable: learn ``means`` and ``betas``.

    Example:
        >>> import torch
        >>> ExpNormalSmearing(0.0, 5.0, num_rbf=4)(torch.tensor([0.0, 5.0])).round(decimals=4)
        tensor([[0.0183, 0.1690, 0.6412, 1.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """

    means: Tensor
    betas: Tensor

    def __init__(
        self,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        num_rbf: int = 50,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        if cutoff_upper <= cutoff_lower:
            raise ValueError(f"need cutoff_lower < cutoff_upper, got {cutoff_lower} and {cutoff_upper}")
        if num_rbf < 1:
            raise ValueError(f"num_rbf must be >= 1, got {num_rbf}")
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper
        self.num_rbf = num_rbf
        self.trainable = trainable
        self.alpha = 5.0 / (cutoff_upper - cutoff_lower)
        self.cutoff_fn = CosineCutoff(cutoff_upper)
        means, betas = self._initial_params()
        if trainable:
            self.means = nn.Parameter(means)
            self.betas = nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def _initial_params(self) -> tuple[Tensor, Tensor]:
        """PhysNet's initial centres and widths, computed in the default dtype as upstream does."""
        start = torch.exp(torch.scalar_tensor(-self.cutoff_upper + self.cutoff_lower))
        means = torch.linspace(start.item(), 1.0, self.num_rbf)
        betas = ((2 / self.num_rbf * (1 - start)) ** -2).expand(self.num_rbf).clone()
        return means, betas

    def reset_parameters(self) -> None:
        """Restore the initial ``means`` and ``betas``."""
        means, betas = self._initial_params()
        with torch.no_grad():
            self.means.copy_(means)
            self.betas.copy_(betas)

    def forward(self, dist: Tensor) -> Tensor:
        dist = dist[..., None]
        decay = torch.exp(self.alpha * (-dist + self.cutoff_lower))
        return self.cutoff_fn(dist) * torch.exp(-self.betas * (decay - self.means) ** 2)

    def extra_repr(self) -> str:
        return (
            f"cutoff_lower={self.cutoff_lower}, cutoff_upper={self.cutoff_upper}, num_rbf={self.num_rbf}, "
            f"trainable={self.trainable}"
        )


class GaussianRadialBasis(nn.Module):
    r"""Learnable Gaussian basis of Graphormer as used by Equiformer v1 and EquiformerV2
    (``GaussianRadialBasisLayer``).

    .. math::

        x = w\, \frac{r}{r_c} + b, \qquad
        \phi_k(r) = \frac{1}{\sqrt{2\pi'}\,\sigma_k} \exp\!\Big(-\frac12 \Big(\frac{x - \mu_k}{\sigma_k}\Big)^2\Big),
        \qquad \sigma_k = |s_k| + 10^{-5},

    with :math:`\pi' = 3.14159` as upstream writes it (kept for parity: the normalisation is
    :math:`4.2 \times 10^{-7}` relatively larger than with :math:`\pi`). Parameters, named and shaped as
    upstream: ``mean`` :math:`\mu` ``[1, K]`` initialised :math:`\mathrm{U}(0, 1)`, ``std`` :math:`s`
    ``[1, K]`` initialised :math:`\mathrm{U}(1/K, 1)` (drawn after ``mean``, so a seeded init matches
    upstream), ``weight`` :math:`w` ``[1, 1]`` = 1 and ``bias`` :math:`b` ``[1, 1]`` = 0.

    Args:
        num_basis: :math:`K \ge 1`.
        cutoff: :math:`r_c > 0`.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> GaussianRadialBasis(num_basis=16, cutoff=5.0)(torch.rand(10)).shape
        torch.Size([10, 16])
    """

    def __init__(self, num_basis: int, cutoff: float) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        self.num_basis = num_basis
        self.cutoff = float(cutoff)
        self.mean = nn.Parameter(torch.empty(1, num_basis))
        self.std = nn.Parameter(torch.empty(1, num_basis))
        self.weight = nn.Parameter(torch.empty(1, 1))
        self.bias = nn.Parameter(torch.empty(1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``mean`` then ``std`` uniformly; set ``weight`` to 1 and ``bias`` to 0."""
        nn.init.uniform_(self.mean, 0.0, 1.0)
        nn.init.uniform_(self.std, 1.0 / self.num_basis, 1.0)
        nn.init.constant_(self.weight, 1.0)
        nn.init.constant_(self.bias, 0.0)

    def forward(self, dist: Tensor) -> Tensor:
        x = self.weight * (dist / self.cutoff)[..., None] + self.bias  # [..., 1] -> broadcast with [1, K]
        std = self.std.abs() + 1e-5
        return torch.exp(-0.5 * ((x - self.mean) / std) ** 2) / ((2 * 3.14159) ** 0.5 * std)

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, cutoff={self.cutoff}"
