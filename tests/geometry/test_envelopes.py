"""Cutoff envelopes: values, smoothness at the cutoff (autograd) and zero beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.geometry import CosineCutoff, PolynomialEnvelope

F64 = torch.float64


def _value_and_slope(module: torch.nn.Module, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = r.clone().requires_grad_()
    value = module(r)
    (slope,) = torch.autograd.grad(value.sum(), r)
    return value.detach(), slope


@pytest.mark.parametrize("exponent", [3, 5, 6])
def test_polynomial_envelope(exponent: int) -> None:
    cutoff = 4.0
    envelope = PolynomialEnvelope(exponent, cutoff=cutoff)
    r = torch.linspace(0.0, 6.0, 61, dtype=F64)
    x = r.numpy() / cutoff
    p = exponent
    poly = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    np.testing.assert_allclose(envelope(r).numpy(), np.where(x < 1, poly, 0.0), atol=1e-14)
    value, slope = _value_and_slope(envelope, torch.tensor([0.0, cutoff * (1 - 1e-6), cutoff, 5.0, 9.0], dtype=F64))
    assert value[0] == 1.0 and slope[0] == 0.0
    assert abs(value[1]) < 1e-12 and abs(slope[1]) < 1e-8
    assert torch.all(value[2:] == 0) and torch.all(slope[2:] == 0)
    torch.testing.assert_close(PolynomialEnvelope(exponent)(r / cutoff), envelope(r))


def test_cosine_cutoff() -> None:
    cutoff = 5.0
    envelope = CosineCutoff(cutoff)
    r = torch.linspace(0.0, 7.0, 71, dtype=F64)
    expected = np.where(r.numpy() < cutoff, 0.5 * (np.cos(np.pi * r.numpy() / cutoff) + 1), 0.0)
    np.testing.assert_allclose(envelope(r).numpy(), expected, atol=1e-15)
    value, slope = _value_and_slope(envelope, torch.tensor([0.0, cutoff * (1 - 1e-6), cutoff, 6.0], dtype=F64))
    assert value[0] == 1.0 and slope[0] == 0.0
    assert abs(value[1]) < 1e-11 and abs(slope[1]) < 1e-5
    assert torch.all(value[2:] == 0) and torch.all(slope[2:] == 0)


def test_envelopes_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exponent"):
        PolynomialEnvelope(0)
    with pytest.raises(ValueError, match="cutoff"):
        PolynomialEnvelope(5, cutoff=-1.0)
    with pytest.raises(ValueError, match="cutoff"):
        CosineCutoff(0.0)
