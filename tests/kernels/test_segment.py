"""segment_sum and build_csr: parity with index_add, layouts, empty segments, derivatives, errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _kernel_helpers import TOLERANCES, random_graph

from zoo.kernels import KernelError, build_csr, segment_sum, sort_by_target

needs_scatter = pytest.mark.skipif(
    importlib.util.find_spec("torch_scatter") is None, reason="torch-scatter not installed (pip install zoo[scatter])"
)


def _expected(src, index, num_segments, reduce):
    out = src.new_zeros(num_segments, *src.shape[1:]).index_add(0, index, src)
    if reduce == "mean":
        count = torch.bincount(index, minlength=num_segments).clamp(min=1).to(src.dtype)
        out = out / count.view(-1, *([1] * (src.dim() - 1)))
    return out


@pytest.mark.parametrize("backend", ["torch", pytest.param("torch_scatter", marks=needs_scatter)])
@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity(backend, layout, reduce, dtype):
    index = random_graph(30, 3, isolated=4)[1]
    if layout == "atomic":
        index = index[torch.randperm(index.numel(), generator=torch.Generator().manual_seed(0))]
    src = torch.randn(index.numel(), 4, 2, dtype=dtype, requires_grad=True)
    out = segment_sum(src, index, 30, reduce=reduce, layout=layout, backend=backend)
    expected = _expected(src, index, 30, reduce)
    torch.testing.assert_close(out, expected, **TOLERANCES[dtype])
    grad = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, src, grad)
    (want,) = torch.autograd.grad(expected, src, grad)
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])


def test_empty_and_double_backward():
    src = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    out = segment_sum(src, torch.zeros(0, dtype=torch.long), 5)
    assert out.shape == (5, 3) and not out.any()
    index = random_graph(6, 2)[1]
    src = torch.randn(index.numel(), 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: segment_sum(s, index, 6), (src,))
    assert torch.autograd.gradgradcheck(lambda s: segment_sum(s, index, 6).square(), (src,))


def test_csr_bitwise_deterministic():
    index = random_graph(500, 20)[1]
    src = torch.randn(index.numel(), 64) * 1e3
    first = segment_sum(src, index, 500)
    assert all(torch.equal(first, segment_sum(src, index, 500)) for _ in range(3))


def test_errors():
    index = torch.tensor([2, 0, 1])
    src = torch.randn(3, 2)
    with pytest.raises(KernelError, match="sorted index"):
        segment_sum(src, index, 3)
    with pytest.raises(KernelError, match="reduce must be"):
        segment_sum(src, index, 3, reduce="max", layout="atomic")
    with pytest.raises(KernelError, match="shape"):
        segment_sum(src, index[:2], 3, layout="atomic")
    with pytest.raises(KernelError, match="backend must be"):
        segment_sum(src, index, 3, layout="atomic", backend="triton")


def test_build_csr():
    edge_index = random_graph(12, 3, isolated=2)
    csr = build_csr(edge_index, 12)
    assert torch.equal(csr.in_degree, torch.bincount(edge_index[1], minlength=12))
    assert csr.ptr[0] == 0 and csr.ptr[-1] == edge_index.shape[1]
    with pytest.raises(KernelError, match="outside"):
        build_csr(edge_index, 5)
    with pytest.raises(KernelError, match=r"\[2, E\]"):
        build_csr(edge_index[0], 12)
    with pytest.raises(KernelError, match=r"torch\.long"):
        build_csr(edge_index.int(), 12)
    shuffled = edge_index.flip(1)
    with pytest.raises(KernelError, match="sorted by target"):
        build_csr(shuffled, 12)
    resorted, perm = sort_by_target(shuffled)
    assert torch.equal(resorted[1], edge_index[1])
    assert torch.equal(resorted, shuffled[:, perm])


def test_row_pointers_and_counts_equal_bincount():
    """The sync-free row pointers (binary search) and counts (index_add_) equal torch.bincount's, empty nodes,
    trailing empty nodes and an empty index included."""
    from zoo.kernels.segment import _row_pointers, segment_counts

    generator = torch.Generator().manual_seed(0)
    for num_nodes, num_edges in ((7, 40), (50, 30), (5, 0)):
        index = torch.randint(0, num_nodes - 2, (num_edges,), generator=generator).sort().values
        counts = torch.bincount(index, minlength=num_nodes)
        assert torch.equal(segment_counts(index, num_nodes), counts)
        assert torch.equal(
            _row_pointers(index, num_nodes), torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        )
        shuffled = index[torch.randperm(num_edges, generator=generator)]
        assert torch.equal(segment_counts(shuffled, num_nodes), counts)
