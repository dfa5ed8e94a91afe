r"""Smooth cutoff envelopes: functions of the distance that go to zero at the cutoff and stay zero beyond."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["CosineCutoff", "PolynomialEnvelope"]


class PolynomialEnvelope(nn.Module):
    r"""Polynomial envelope of DimeNet/GemNet, in :math:`x = r / r_c`:

    .. math::

        u(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2)\, x^{p+1} - \frac{p(p+1)}{2} x^{p+2}
        \quad (x < 1), \qquad u(x) = 0 \quad (x \ge 1).

    :math:`u(0) = 1`; :math:`u`, :math:`u'` and :math:`u''` vanish at :math:`x = 1`. With the default
    ``cutoff=1.0`` the input is the scaled distance :math:`x` itself, as in fairchem's GemNet ``RadialBasis``
    (where the envelope of the spherical-Bessel basis of Equiformer v1 lives) and with the same arithmetic.

    Args:
        exponent: :math:`p \ge 1` (GemNet and Equiformer v1 use 5).
        cutoff: :math:`r_c > 0`, in the unit of the distances.

    Shapes:
        ``dist [...]`` -> ``[...]``.

    Example:
        >>> import torch
        >>> PolynomialEnvelope(exponent=5)(torch.tensor([0.0, 1.0, 2.0]))
        tensor([1., 0., 0.])
    """

    def __init__(self, exponent: int = 5, cutoff: float = 1.0) -> None:
        super().__init__()
        if exponent < 1:
            raise ValueError(f"exponent must be >= 1, got {exponent}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        self.exponent = exponent
        self.cutoff = float(cutoff)
        p = float(exponent)
        self._coefficients = (-(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2)

    def forward(self, dist: Tensor) -> Tensor:
        x = dist / self.cutoff
        p = float(self.exponent)
        a, b, c = self._coefficients
        envelope = 1 + a * x**p + b * x ** (p + 1) + c * x ** (p + 2)
        return torch.where(x < 1, envelope, torch.zeros_like(x))

    def extra_repr(self) -> str:
        return f"exponent={self.exponent}, cutoff={self.cutoff}"


class CosineCutoff(nn.Module):
    r"""Cosine cutoff of SchNet, TorchMD-Net and Equiformer v1:

    .. math::

        f(r) = \tfrac12 \left(\cos\frac{\pi r}{r_c} + 1\right) \quad (r < r_c), \qquad f(r) = 0 \quad (r \ge r_c).

    :math:`f(0) = 1`; :math:`f` and :math:`f'` vanish at :math:`r_c` (:math:`f''` does not).

    Args:
        cutoff: :math:`r_c > 0`, in the unit of the distances.

    Shapes:
        ``dist [...]`` -> ``[...]``.

    Example:
        >>> import torch
        >>> CosineCutoff(2.0)(torch.tensor([0.0, 1.0, 2.0]))
        tensor([1.0000, 0.5000, 0.0000])
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        self.cutoff = float(cutoff)

    def forward(self, dist: Tensor) -> Tensor:
        value = 0.5 * (torch.cos(dist * math.pi / self.cutoff) + 1.0)
        return torch.where(dist < self.cutoff, value, torch.zeros_like(value))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"
