"""Radial bases against independent numpy formulas, with upstream state-dict names and initial values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.geometry import BesselBasis, ExpNormalSmearing, GaussianRadialBasis, GaussianSmearing

F64 = torch.float64


def _distances() -> torch.Tensor:
    return torch.linspace(0.05, 7.0, 57, dtype=F64)


def test_gaussian_smearing_matches_formula_and_state_dict() -> None:
    basis = GaussianSmearing(0.0, 6.0, 25, basis_width_scalar=2.0)
    assert list(basis.state_dict()) == ["offset"]
    assert basis.offset.dtype == torch.float32
    offset = np.linspace(0.0, 6.0, 25)
    np.testing.assert_allclose(basis.offset.numpy(), offset, atol=1e-6)
    spacing32 = float(np.float32(basis.offset[1].item()) - np.float32(basis.offset[0].item()))
    assert basis.coeff == -0.5 / (2.0 * spacing32) ** 2  # derived from the float32 centres, as upstream
    r = _distances().numpy()
    expected = np.exp(-0.5 * ((r[:, None] - offset[None, :]) / (2.0 * 0.25)) ** 2)
    out = basis(_distances())
    assert out.shape == (57, 25) and out.dtype == F64
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert basis(torch.rand(2, 3)).shape == (2, 3, 25)


def test_bessel_basis_matches_formula() -> None:
    cutoff, count = 5.0, 8
    basis = BesselBasis(cutoff, count).double()
    r = _distances().numpy()
    n = np.arange(1, count + 1)
    expected = np.sqrt(2 / cutoff) * np.sin(n[None, :] * np.pi * r[:, None] / cutoff) / r[:, None]
    np.testing.assert_allclose(basis(_distances()).numpy(), expected, rtol=1e-6, atol=1e-6)
    fresh = BesselBasis(cutoff, count)
    np.testing.assert_array_equal(fresh.frequencies.numpy(), np.pi * np.arange(1, count + 1, dtype=np.float32))
    assert list(fresh.state_dict()) == ["frequencies"] and not list(fresh.parameters())
    trainable = BesselBasis(cutoff, count, trainable=True)
    assert [name for name, _ in trainable.named_parameters()] == ["frequencies"]


def test_exp_normal_smearing_matches_formula() -> None:
    lower, upper, count = 0.5, 5.0, 16
    basis = ExpNormalSmearing(lower, upper, count).double()
    assert list(basis.state_dict()) == ["means", "betas"] and not list(basis.parameters())
    start = math.exp(lower - upper)
    means = np.linspace(start, 1.0, count)
    betas = np.full(count, (2 / count * (1 - start)) ** -2)
    np.testing.assert_allclose(basis.means.numpy(), means, rtol=1e-6)
    np.testing.assert_allclose(basis.betas.numpy(), betas, rtol=1e-6)
    r = _distances().numpy()[:, None]
    cosine = np.where(r < upper, 0.5 * (np.cos(np.pi * r / upper) + 1), 0.0)
    alpha = 5.0 / (upper - lower)
    stored_means, stored_betas = basis.means.numpy(), basis.betas.numpy()  # float32 initial values
    expected = cosine * np.exp(-stored_betas * (np.exp(alpha * (lower - r)) - stored_means) ** 2)
    np.testing.assert_allclose(basis(_distances()).numpy(), expected, rtol=1e-6, atol=1e-12)
    trainable = ExpNormalSmearing(lower, upper, count, trainable=True)
    assert [name for name, _ in trainable.named_parameters()] == ["means", "betas"]
    with torch.no_grad():
        trainable.means.add_(1.0)
    trainable.reset_parameters()
    np.testing.assert_allclose(trainable.means.detach().numpy(), means, rtol=1e-6)


def test_gaussian_radial_basis_matches_formula_and_init() -> None:
    count, cutoff = 12, 5.0
    torch.manual_seed(7)
    basis = GaussianRadialBasis(count, cutoff)
    torch.manual_seed(7)
    mean = torch.empty(1, count).uniform_(0.0, 1.0)
    std = torch.empty(1, count).uniform_(1.0 / count, 1.0)
    shapes = {name: tuple(p.shape) for name, p in basis.named_parameters()}
    assert shapes == {"mean": (1, count), "std": (1, count), "weight": (1, 1), "bias": (1, 1)}
    assert torch.equal(basis.mean, mean) and torch.equal(basis.std, std)
    assert basis.weight.item() == 1.0 and basis.bias.item() == 0.0
    with torch.no_grad():
        basis.weight.fill_(1.3)
        basis.bias.fill_(-0.1)
        basis.std[0, 0] = -0.2  # |std| is used
    basis = basis.double()
    x = basis.weight.item() * _distances().numpy()[:, None] / cutoff + basis.bias.item()
    sigma = np.abs(basis.std.detach().numpy()) + 1e-5
    mu = basis.mean.detach().numpy()
    expected = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (np.sqrt(2 * 3.14159) * sigma)
    np.testing.assert_allclose(basis(_distances()).detach().numpy(), expected, rtol=1e-12)


def test_radial_bases_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_gaussians"):
        GaussianSmearing(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="cutoff"):
        BesselBasis(0.0)
    with pytest.raises(ValueError, match="cutoff_lower < cutoff_upper"):
        ExpNormalSmearing(2.0, 1.0)
    with pytest.raises(ValueError, match="num_basis"):
        GaussianRadialBasis(0, 5.0)
