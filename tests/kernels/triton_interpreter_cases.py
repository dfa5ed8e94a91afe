"""Triton kernels in Triton's CPU interpreter, small graphs. Run by test_triton.py in a fresh process with
``TRITON_INTERPRET=1`` (or directly: ``TRITON_INTERPRET=1 pytest tests/kernels/triton_interpreter_cases.py``).
Nothing here sets the variable: ``--doctest-modules`` imports this file in every pytest run, GPU ones too."""

from __future__ import annotations

import pytest
import torch
from _kernel_helpers import TOLERANCES, check_parity, edge_mlp, force_loss, make_case
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
