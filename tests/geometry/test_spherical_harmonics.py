"""Spherical harmonics and Wigner-D matrices: e3nn conventions, exactness in float64, block layout."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from e3nn import o3

from zoo.geometry import spherical_harmonics, wigner_D, wigner_D_blocks

F64 = torch.float64


@pytest.fixture
def float64_default() -> Iterator[None]:
    """e3nn builds its Wigner generators in the default dtype: make that float64 for exact comparisons."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _random_rotations(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    quaternion = torch.randn(count, 4, generator=generator, dtype=F64)
    return o3.quaternion_to_matrix(quaternion / quaternion.norm(dim=-1, keepdim=True))


def _apply(matrix: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return (matrix @ vectors[..., None])[..., 0]


def test_spherical_harmonics_wraps_e3nn_with_y_polar() -> None:
    vec = torch.randn(7, 3, dtype=F64)
    sh = spherical_harmonics(3, vec)
    assert sh.shape == (7, 16)
    torch.testing.assert_close(sh, o3.spherical_harmonics([0, 1, 2, 3], vec, True, normalization="component"))
    polar = spherical_harmonics(4, torch.tensor([[0.0, 2.5, 0.0], [0.0, -0.5, 0.0]], dtype=F64))
    m_zero = torch.tensor([l * l + l for l in range(5)])
    off_axis = torch.ones(25, dtype=torch.bool)
    off_axis[m_zero] = False
    assert torch.all(polar[:, off_axis].abs() < 1e-12)
    expected = torch.tensor([[math.sqrt(2 * l + 1) * s**l for l in range(5)] for s in (1, -1)], dtype=F64)
    torch.testing.assert_close(polar[:, m_zero], expected)


def test_spherical_harmonics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lmax"):
        spherical_harmonics(-1, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        spherical_harmonics(2, torch.zeros(4, 2))


@pytest.mark.usefixtures("float64_default")
def test_wigner_D_equals_e3nn() -> None:
    alpha, beta, gamma = (torch.rand(3, 20) * 4 * math.pi - 2 * math.pi).unbind(0)
    for l in range(9):
        torch.testing.assert_close(
            wigner_D(l, alpha, beta, gamma), o3.wigner_D(l, alpha, beta, gamma), atol=1e-12, rtol=0
        )


def test_wigner_D_is_an_orthogonal_representation() -> None:
    first, second = _random_rotations(10, seed=0), _random_rotations(10, seed=1)
    for l in range(9):
        d_first = wigner_D(l, *o3.matrix_to_angles(first))
        d_second = wigner_D(l, *o3.matrix_to_angles(second))
        d_product = wigner_D(l, *o3.matrix_to_angles(first @ second))
        eye = torch.eye(2 * l + 1, dtype=F64).expand_as(d_first)
        torch.testing.assert_close(d_first @ d_first.transpose(-1, -2), eye, atol=1e-13, rtol=0)
        torch.testing.assert_close(d_product, d_first @ d_second, atol=1e-12, rtol=0)
    torch.testing.assert_close(wigner_D(1, *o3.matrix_to_angles(first)), first, atol=1e-14, rtol=0)


def test_wigner_D_blocks_rotate_spherical_harmonics() -> None:
    rotation = _random_rotations(12, seed=2)
    vec = torch.randn(12, 3, dtype=F64)
    blocks = wigner_D_blocks(8, rotation)
    assert blocks.shape == (12, 81, 81) and blocks.dtype == F64
    torch.testing.assert_close(
        _apply(blocks, spherical_harmonics(8, vec)), spherical_harmonics(8, _apply(rotation, vec)), atol=1e-12, rtol=0
    )
    mask = torch.block_diag(*[torch.ones(2 * l + 1, 2 * l + 1) for l in range(9)]).bool()
    assert torch.all(blocks[:, ~mask] == 0)


def test_wigner_D_blocks_at_gimbal_lock() -> None:
    """Rotations with R e_y = +-e_y have singular Euler angles; the matrices must stay exact."""
    about_y = o3.matrix_y(torch.tensor([0.3, -2.0], dtype=F64))
    half_turn_x = o3.matrix_x(torch.tensor(math.pi, dtype=F64))
    rotation = torch.cat([about_y, half_turn_x @ about_y, torch.eye(3, dtype=F64)[None]])
    vec = torch.randn(len(rotation), 3, dtype=F64)
    torch.testing.assert_close(
        _apply(wigner_D_blocks(6, rotation), spherical_harmonics(6, vec)),
        spherical_harmonics(6, _apply(rotation, vec)),
        atol=1e-12,
        rtol=0,
    )


def test_wigner_D_blocks_float32_agrees_with_float64() -> None:
    rotation = _random_rotations(50, seed=3)
    single = wigner_D_blocks(8, rotation.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), wigner_D_blocks(8, rotation), atol=2e-5, rtol=0)


def test_wigner_D_blocks_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        wigner_D_blocks(2, torch.eye(4))
    with pytest.raises(ValueError, match="lmax"):
        wigner_D_blocks(-1, torch.eye(3))
