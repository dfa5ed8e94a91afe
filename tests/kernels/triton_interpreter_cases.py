"""Triton kernels in Triton's CPU interpreter, small graphs. Run by test_triton.py in a fresh process with
``TRITON_INTERPRET=1`` (or directly: ``TRITON_INTERPRET=1 pytest tests/kernels/triton_interpreter_cases.py``).
Nothing here sets the variable: ``--doctest-modules`` imports this file in every pytest run, GPU ones too."""

from __future__ import annotations

import pytest
import torch
from _kernel_helpers import TOLERANCES, check_parity, check_so2_parity, edge_mlp, force_loss, make_case, so2_case
from torch import nn

from zoo.kernels import build_csr, message_aggregate


@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize(
    ("dtype", "edge_dim", "hidden", "out", "act", "reduce"),
    [
        (torch.float64, 3, 16, 24, nn.SiLU, "sum"),
        (torch.float32, 0, 32, None, nn.ReLU, "mean"),
        (torch.float32, 20, 24, 16, nn.SiLU, "sum"),
    ],
)
def test_parity(layout, dtype, edge_dim, hidden, out, act, reduce):
    """Both kernels, widths that need masking, edge features by loop (D <= 16) and by tl.dot (D = 20)."""
    case = make_case(dtype, "cpu", 37, 5, 6, edge_dim, hidden, out, act)
    check_parity(*case, backend="triton", layout=layout, reduce=reduce)


def test_double_backward():
    h, edge_index, _, _ = make_case(torch.float64, "cpu", 20, 4, 4, 0, 16, 16)
    mlp = edge_mlp(4, 1, 16, 16)
    pos = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    inputs = [h, pos, *mlp.parameters()]
    got = torch.autograd.grad(force_loss("triton", mlp, h, pos, edge_index), inputs)
    want = torch.autograd.grad(force_loss("reference", mlp, h, pos, edge_index), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


def test_csr_deterministic_and_empty():
    h, edge_index, edge_attr, mlp = make_case(torch.float32, "cpu", 40, 6, 4, 2, 16, 16)
    csr = build_csr(edge_index, 40)
    first = message_aggregate(h, csr, edge_attr, mlp, backend="triton")
    assert torch.equal(first, message_aggregate(h, csr, edge_attr, mlp, backend="triton"))
    empty = message_aggregate(h, torch.zeros(2, 0, dtype=torch.long), edge_attr[:0], mlp, backend="triton")
    assert empty.shape == (40, 16) and not empty.any()


@pytest.mark.parametrize(("dtype", "sorted_index"), [(torch.float64, False), (torch.float32, True)])
def test_so2_rotations(dtype, sorted_index):
    """gather_rotate / rotate_back_sum: widths that need masking (K = 16, R = 11, C = 6), unsorted targets
    (walked through the sorting permutation), a node without edges; values and first derivatives."""
    check_so2_parity("triton", dtype, sorted_index=sorted_index)


def test_so2_second_derivatives():
    from zoo.kernels import gather_rotate, rotate_back_sum

    x, wigner_in, message, wigner_out, index = so2_case(torch.float64, "cpu", 5, 9, 4, 3, 2)

    def fn(x, message):
        rotated = gather_rotate(x, wigner_in.detach(), index, backend="triton")
        summed = rotate_back_sum(message, wigner_out.detach(), index, 5, backend="triton")
        return rotated.square().sum() + summed.pow(3).sum()

    assert torch.autograd.gradgradcheck(fn, (x, message))
