"""Radius graphs on the GPU: vesin-torch on CUDA tensors gives the CPU neighbour list (``pytest -m gpu``)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("vesin_torch") is None, reason="vesin-torch not installed"),
]


def _pairs(i, j, shifts) -> set[tuple[int, ...]]:
    rows = np.concatenate([np.stack([i, j], 1), shifts], 1).astype(np.int64)
    return set(map(tuple, rows.tolist()))


@pytest.mark.parametrize(("num_atoms", "periodic"), [(2000, True), (20000, True), (500, False)])
def test_vesin_torch_cuda_matches_cpu(num_atoms, periodic):
    import vesin
    from vesin_torch import NeighborList

    rng = np.random.default_rng(0)
    length = (num_atoms / 0.05) ** (1 / 3)
    points = rng.uniform(0.0, length, (num_atoms, 3))
    box = np.eye(3) * length
    cutoff = 5.0
    cpu = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts, distances = cpu.compute(points=points, box=box, periodic=periodic, quantities="ijSd")
    gpu = NeighborList(cutoff=cutoff, full_list=True)
    pos_cuda = torch.tensor(points, device="cuda")
    box_cuda = torch.tensor(box, device="cuda")
    gi, gj, gs, gd = gpu.compute(pos_cuda, box_cuda, periodic, "ijSd")
    assert gi.is_cuda and gd.is_cuda
    assert _pairs(gi.cpu().numpy(), gj.cpu().numpy(), gs.cpu().numpy()) == _pairs(i, j, shifts)
    np.testing.assert_allclose(np.sort(gd.cpu().numpy()), np.sort(distances), rtol=1e-12, atol=1e-12)
