"""gather_rotate / rotate_back_sum (the SO(2) convolutions' edge rotations): the ``torch`` backend against
``bmm`` + ``index_add_`` (values, first and second derivatives), determinism, edge cases, errors. Triton: in
Triton's interpreter through triton_interpreter_cases.py, and on CUDA with ``pytest -m gpu``."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _kernel_helpers import TOLERANCES, check_so2_parity, so2_case

from zoo.kernels import KernelError, gather_rotate, rotate_back_sum

CUDA = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sorted_index", [False, True])
def test_parity(dtype, sorted_index):
    check_so2_parity("torch", dtype, sorted_index=sorted_index)


def test_chunks_on_cpu(monkeypatch):
    """Many small chunks give the same numbers as one."""
    from zoo.kernels import so2

    monkeypatch.setattr(so2, "CPU_CHUNK_ELEMENTS", 1)
    check_so2_parity("torch", torch.float64)


def test_gradcheck_and_gradgradcheck():
    """Finite differences, first and second order, w.r.t. features and matrices (each op's gradient is the
    other op, so every order is covered)."""
    x, wigner_in, message, wigner_out, index = so2_case(torch.float64, "cpu", 5, 9, 4, 3, 2)

    def fn(x, wigner_in, message, wigner_out):
        rotated = gather_rotate(x, wigner_in, index, backend="torch")
        return rotated, rotate_back_sum(message, wigner_out, index, x.shape[0], backend="torch")

    assert torch.autograd.gradcheck(fn, (x, wigner_in, message, wigner_out))
    assert torch.autograd.gradgradcheck(fn, (x, wigner_in, message, wigner_out))


def test_bitwise_deterministic():
    _, _, message, wigner_out, index = so2_case(torch.float32, "cpu", 50, 2000, 25, 15, 32)
    first = rotate_back_sum(message, wigner_out, index, 50)
    (grad_first,) = torch.autograd.grad(first.square().sum(), message)
    for _ in range(3):
        again = rotate_back_sum(message, wigner_out, index, 50)
        assert torch.equal(again, first)
        assert torch.equal(torch.autograd.grad(again.square().sum(), message)[0], grad_first)


def test_empty_and_isolated():
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    empty = torch.zeros(0, dtype=torch.long)
    assert gather_rotate(x, torch.zeros(0, 3, 4, dtype=torch.float64), empty).shape == (0, 3, 2)
    no_messages, no_matrices = torch.zeros(0, 3, 2, dtype=torch.float64), torch.zeros(0, 4, 3, dtype=torch.float64)
    out = rotate_back_sum(no_messages, no_matrices, empty, 3)
    assert out.shape == (3, 4, 2) and not out.any()
    _, _, message, wigner_out, index = so2_case(torch.float64, "cpu")
    assert not rotate_back_sum(message, wigner_out, index, 9)[-1].any()  # the last node has no edges


def test_errors():
    x, wigner_in, message, wigner_out, index = so2_case(torch.float64, "cpu")
    with pytest.raises(KernelError, match="K = 16 columns"):
        gather_rotate(x, wigner_in[:, :, :5], index)
    with pytest.raises(KernelError, match="dtype and device of the features"):
        gather_rotate(x, wigner_in.float(), index)
    with pytest.raises(KernelError, match=r"index must be \[E\] = \[31\] torch.long"):
        gather_rotate(x, wigner_in, index[:-1])
    with pytest.raises(KernelError, match=r"outside \[0, 9\)"):
        gather_rotate(x, wigner_in, index + 5)
    with pytest.raises(KernelError, match="wigner must be \\[E, K, R\\]"):
        rotate_back_sum(message, wigner_in, index, 9)
    with pytest.raises(KernelError, match="take backend in"):
        rotate_back_sum(message, wigner_out, index, 9, backend="compile")
    with pytest.raises(KernelError, match="3 dimensions"):
        rotate_back_sum(message[0], wigner_out, index, 9)


def test_index_checked_and_sorted_once_per_tensor(monkeypatch):
    """The rows of one edge_index, used by every layer: range check and segments once per tensor (each a GPU
    sync), again after an in-place change (which can make the index invalid) or for another node count."""
    from zoo.kernels import so2

    checks, sorts = [], []
    real_segments, real_aminmax = so2._segments, torch.aminmax
    monkeypatch.setattr(so2, "_segments", lambda *a: sorts.append(1) or real_segments(*a))
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: checks.append(1) or real_aminmax(*a, **k))
    x, wigner_in, message, wigner_out, index = so2_case(torch.float64, "cpu")
    edge_index = torch.stack([index, index.flip(0)])
    for _ in range(3):  # three "layers"
        rotated = gather_rotate(x, wigner_in, edge_index[0])
        out = rotate_back_sum(message, wigner_out, edge_index[1], 9)
    assert len(checks) == 2 and len(sorts) == 1  # the range of each row; the targets' segments
    torch.autograd.grad((rotated.sum() + out.sum()), [x, message])  # the sources' segments, for the backward
    assert len(sorts) == 2
    edge_index[1, 0] = 9  # in place: now out of range
    with pytest.raises(KernelError, match=r"outside \[0, 9\)"):
        rotate_back_sum(message, wigner_out, edge_index[1], 9)
    rotate_back_sum(message, wigner_out, edge_index[1], 10)  # another node count: checked and sorted anew
    assert len(sorts) == 3
    # the cache keeps no index alive: a freed edge_index is freed
    import gc
    import weakref

    alive = weakref.ref(edge_index)
    del edge_index, rotated, out
    gc.collect()
    assert alive() is None


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_parity_and_determinism(backend, dtype):
    tolerance = TOLERANCES[dtype] if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    check_so2_parity(backend, dtype, "cuda", tolerance=tolerance)
    _, _, message, wigner_out, index = so2_case(dtype, "cuda", 500, 20000, 49, 29, 128)
    first = rotate_back_sum(message, wigner_out, index, 500, backend=backend)
    assert torch.equal(rotate_back_sum(message, wigner_out, index, 500, backend=backend), first)
