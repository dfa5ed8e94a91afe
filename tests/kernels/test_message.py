"""message_aggregate: every CPU backend against the literal reference (values, gradients, second derivatives),
edge cases, determinism and errors. Triton: test_triton.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _kernel_helpers import TOLERANCES, check_parity, edge_mlp, force_loss, make_case, random_graph
from torch import nn

from zoo.kernels import (
    KernelError,
    build_csr,
    message_aggregate,
    message_aggregate_reference,
    sort_by_target,
)

HAS_SCATTER = importlib.util.find_spec("torch_scatter") is not None
needs_scatter = pytest.mark.skipif(not HAS_SCATTER, reason="torch-scatter not installed (pip install zoo[scatter])")
BACKENDS = ["torch", "compile", pytest.param("torch_scatter", marks=needs_scatter)]


def _inputs(dtype, num_nodes=23, degree=4, node_dim=5, edge_dim=3, isolated=2):
    edge_index = random_graph(num_nodes, degree, isolated=isolated)
    generator = torch.Generator().manual_seed(2)
    h = torch.randn(num_nodes, node_dim, generator=generator, dtype=dtype).requires_grad_()
    edge_attr = None
    if edge_dim:
        edge_attr = torch.randn(edge_index.shape[1], edge_dim, generator=generator, dtype=dtype).requires_grad_()
    return h, edge_index, edge_attr


def _grads(out, inputs):
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad(out, inputs, grad_out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_two_layer(backend, layout, dtype):
    h, edge_index, edge_attr = _inputs(dtype)
    mlp = edge_mlp(5, 3, 16, 12).to(dtype)
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp)
    out = message_aggregate(h, edge_index, edge_attr, mlp, layout=layout, backend=backend)
    torch.testing.assert_close(out, expected, **TOLERANCES[dtype])
    inputs = [h, edge_attr, *mlp.parameters()]
    for got, want in zip(_grads(out, inputs), _grads(expected, inputs), strict=True):
        torch.testing.assert_close(got, want, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_float32_large_graph_no_worse_than_pytorch(backend):
    """float32, 72k edges, H = 128: each output and gradient is as close to the float64 result as PyTorch's own
    float32 computation is (within 4x)."""
    case = make_case(torch.float32, "cpu", 3000, 24, 32, 1, 128, 128)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the float32 reference's own rounding depends on how BLAS splits the sums
    try:
        check_parity(*case, backend=backend, against_float64=True)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("edge_dim", "out", "act", "reduce"),
    [(0, None, nn.SiLU, "sum"), (3, None, nn.ReLU, "mean"), (0, 7, nn.ReLU, "sum"), (2, 9, nn.SiLU, "mean")],
)
def test_parity_variants(backend, edge_dim, out, act, reduce):
    """One- and two-layer MLPs, with and without edge features, SiLU and ReLU, sum and mean."""
    h, edge_index, edge_attr = _inputs(torch.float64, edge_dim=edge_dim)
    mlp = edge_mlp(5, edge_dim, 8, out, act)
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, reduce=reduce)
    got = message_aggregate(h, edge_index, edge_attr, mlp, reduce=reduce, backend=backend)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float64])
    inputs = [h, *([] if edge_attr is None else [edge_attr]), *mlp.parameters()]
    for g, w in zip(_grads(got, inputs), _grads(expected, inputs), strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


@pytest.mark.parametrize(
    ("backend", "layout"),
    [
        ("torch", "csr"),
        ("torch", "atomic"),
        ("compile", "csr"),
    ],
)
def test_double_backward_forces(backend, layout):
    """Training on forces: d/dθ of |dE/dpos|^2 through an edge feature that depends on positions."""
    h, edge_index, _ = _inputs(torch.float64, edge_dim=0)
    pos = torch.randn(h.shape[0], 3, dtype=torch.float64, requires_grad=True)
    mlp = edge_mlp(5, 1, 8, 6)
    inputs = [h, pos, *mlp.parameters()]
    expected = torch.autograd.grad(force_loss("reference", mlp, h, pos, edge_index), inputs)
    got = torch.autograd.grad(force_loss(backend, mlp, h, pos, edge_index, layout), inputs)
    for g, w in zip(got, expected, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


class _Aggregate(nn.Module):
    """message_aggregate as a module, so that torch.func.functional_call can swap the MLP's weights."""

    def __init__(self, mlp: nn.Sequential, edge_index: torch.Tensor, layout: str) -> None:
        super().__init__()
        self.mlp, self.edge_index, self.layout = mlp, edge_index, layout

    def forward(self, h: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return message_aggregate(h, self.edge_index, edge_attr, self.mlp, layout=self.layout, backend="torch")


@pytest.mark.parametrize("layout", ["csr", "atomic"])
def test_gradcheck_and_gradgradcheck(layout):
    """Finite differences, first and second order, w.r.t. inputs and weights (torch backend, float64)."""
    h, edge_index, edge_attr = _inputs(torch.float64, num_nodes=7, degree=2, node_dim=2, edge_dim=2, isolated=1)
    module = _Aggregate(edge_mlp(2, 2, 4, 3), edge_index, layout)
    names = [name for name, _ in module.named_parameters()]

    def fn(h, edge_attr, *params):
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)), (h, edge_attr))

    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (h, edge_attr, *params))
    assert torch.autograd.gradgradcheck(fn, (h, edge_attr, *params))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_empty_graph(backend, reduce):
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    edge_index = torch.zeros(2, 0, dtype=torch.long)
    edge_attr = torch.zeros(0, 2, dtype=torch.float64, requires_grad=True)
    mlp = edge_mlp(3, 2, 8, 5)
    out = message_aggregate(h, edge_index, edge_attr, mlp, reduce=reduce, backend=backend)
    assert out.shape == (4, 5)
    assert torch.equal(out, torch.zeros_like(out))
    grads = torch.autograd.grad(out.sum(), [h, *mlp.parameters()], allow_unused=True)
    assert all(g is None or torch.equal(g, torch.zeros_like(g)) for g in grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nodes_without_incoming_edges(backend):
    h, edge_index, edge_attr = _inputs(torch.float64, isolated=3)
    mlp = edge_mlp(5, 3, 8, 4)
    for reduce in ("sum", "mean"):
        out = message_aggregate(h, edge_index, edge_attr, mlp, reduce=reduce, backend=backend)
        no_incoming = torch.ones(h.shape[0], dtype=torch.bool)
        no_incoming[edge_index[1]] = False
        assert no_incoming[0] and no_incoming[-3:].all()
        assert torch.equal(out[no_incoming], torch.zeros_like(out[no_incoming]))


def test_no_nodes():
    h = torch.zeros(0, 3, dtype=torch.float64)
    out = message_aggregate(h, torch.zeros(2, 0, dtype=torch.long), None, edge_mlp(3, 0, 4, 2))
    assert out.shape == (0, 2)


@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_csr_bitwise_deterministic(backend):
    """Same inputs, same bits: forward and every gradient."""
    h, edge_index, edge_attr = _inputs(torch.float32, num_nodes=200, degree=12, node_dim=16)
    mlp = edge_mlp(16, 3, 32, 32).float()
    csr = build_csr(edge_index, h.shape[0])
    runs = []
    for _ in range(3):
        out = message_aggregate(h, csr, edge_attr, mlp, backend=backend)
        runs.append([out, *torch.autograd.grad(out.square().sum(), [h, edge_attr, *mlp.parameters()])])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


def test_unsorted_edges_csr_raises_atomic_works():
    h, edge_index, edge_attr = _inputs(torch.float64)
    perm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled, shuffled_attr = edge_index[:, perm], edge_attr[perm]
    mlp = edge_mlp(5, 3, 8, 4)
    with pytest.raises(KernelError, match="sorted by target"):
        message_aggregate(h, shuffled, shuffled_attr, mlp)
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp)
    atomic = message_aggregate(h, shuffled, shuffled_attr, mlp, layout="atomic")
    torch.testing.assert_close(atomic, expected, **TOLERANCES[torch.float64])
    resorted, order = sort_by_target(shuffled)
    csr = message_aggregate(h, resorted, shuffled_attr[order], mlp)
    torch.testing.assert_close(csr, expected, **TOLERANCES[torch.float64])


def test_state_dict_keys_stay_official():
    """The op takes the model's own Sequential: its keys are EGNN's edge_mlp.0.weight, ..."""
    model = nn.Module()
    model.edge_mlp = edge_mlp(4, 1, 8, 8)
    assert list(model.state_dict()) == ["edge_mlp.0.weight", "edge_mlp.0.bias", "edge_mlp.2.weight", "edge_mlp.2.bias"]


@pytest.mark.parametrize(
    ("mlp", "message"),
    [
        (nn.Sequential(nn.Linear(13, 8), nn.Tanh()), "mlp must be"),
        (nn.Sequential(nn.Linear(13, 8), nn.SiLU(), nn.Linear(8, 4), nn.ReLU()), "mlp must be"),
        (nn.Sequential(nn.Linear(12, 8), nn.SiLU()), "takes 12 inputs"),
        (nn.Linear(13, 8), "mlp must be"),
    ],
)
def test_bad_mlp(mlp, message):
    h, edge_index, edge_attr = _inputs(torch.float32)
    with pytest.raises(KernelError, match=message):
        message_aggregate(h, edge_index, edge_attr, mlp)


def test_bad_arguments():
    h, edge_index, edge_attr = _inputs(torch.float64)
    mlp = edge_mlp(5, 3, 8, 4)
    with pytest.raises(KernelError, match="backend must be"):
        message_aggregate(h, edge_index, edge_attr, mlp, backend="cuda")
    with pytest.raises(KernelError, match="layout must be"):
        message_aggregate(h, edge_index, edge_attr, mlp, layout="coo")
    with pytest.raises(KernelError, match="reduce must be"):
        message_aggregate(h, edge_index, edge_attr, mlp, reduce="max")
    with pytest.raises(KernelError, match="edge_attr must be"):
        message_aggregate(h, edge_index, edge_attr.float(), mlp)
    with pytest.raises(KernelError, match="rows for"):
        message_aggregate(h, edge_index, edge_attr[:-1], mlp)
    with pytest.raises(KernelError, match="outside"):
        message_aggregate(h[:3], edge_index, edge_attr, mlp)
    with pytest.raises(KernelError, match="h must be"):
        message_aggregate(h.long(), edge_index, edge_attr, mlp)


def test_missing_torch_scatter_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torch_scatter" else real(name))
    h, edge_index, edge_attr = _inputs(torch.float64)
    with pytest.raises(KernelError, match=r"pip install zoo\[scatter\]"):
        message_aggregate(h, edge_index, edge_attr, edge_mlp(5, 3, 8, 4), backend="torch_scatter")


def test_auto_choice():
    """CPU: torch. CUDA: the Triton kernel for one-layer MLPs, torch (cuBLAS) for two-layer ones."""
    from zoo.kernels import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda"), triton_first=False) == "torch"
    expected = "triton" if importlib.util.find_spec("triton") else "torch"
    assert resolve_backend("auto", torch.device("cuda"), triton_first=True) == expected


def test_available_backends():
    from zoo.kernels import available_backends

    names = available_backends("cpu")
    assert names[:2] == ["torch", "compile"]
    assert ("torch_scatter" in names) == HAS_SCATTER
    assert "triton" in available_backends("cuda") or importlib.util.find_spec("triton") is None


def test_shared_csr_graph_any_layout():
    """One CSRGraph built per graph serves every layer, in either layout; a wrong node count raises."""
    h, edge_index, edge_attr = _inputs(torch.float64)
    csr = build_csr(edge_index, h.shape[0])
    mlp = edge_mlp(5, 3, 8, 4)
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp)
    for layout in ("csr", "atomic"):
        out = message_aggregate(h, csr, edge_attr, mlp, layout=layout)
        torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])
    with pytest.raises(KernelError, match="nodes"):
        message_aggregate(h[:-1], csr, edge_attr, mlp)


# --- gate and edge weights (EGNN's attention and cutoff envelope) -----------------------------------------------


def _gate(width: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(width, 1, bias=bias), nn.Sigmoid()).double()


def _edge_weight(num_edges: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    return torch.rand(num_edges, generator=generator, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize(
    ("out", "with_gate", "gate_bias", "with_weight", "reduce"),
    [
        (9, True, True, False, "sum"),
        (9, False, False, True, "sum"),
        (9, True, True, True, "mean"),
        (None, True, False, True, "sum"),
        (None, False, False, True, "mean"),
    ],
)
def test_parity_gate_and_edge_weight(backend, layout, out, with_gate, gate_bias, with_weight, reduce):
    """Values and first derivatives w.r.t. h, edge_attr, every weight (gate included) and the edge weights."""
    h, edge_index, edge_attr = _inputs(torch.float64)
    mlp = edge_mlp(5, 3, 8, out)
    gate = _gate(out or 8, gate_bias) if with_gate else None
    weight = _edge_weight(edge_index.shape[1]) if with_weight else None
    kwargs = {"reduce": reduce, "gate": gate, "edge_weight": weight}
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs)
    got = message_aggregate(h, edge_index, edge_attr, mlp, layout=layout, backend=backend, **kwargs)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float64])
    inputs = [h, edge_attr, *mlp.parameters(), *([] if gate is None else gate.parameters())]
    inputs += [] if weight is None else [weight]
    for g, w in zip(_grads(got, inputs), _grads(expected, inputs), strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


class _GatedAggregate(nn.Module):
    def __init__(self, mlp: nn.Sequential, gate: nn.Sequential, edge_index: torch.Tensor) -> None:
        super().__init__()
        self.mlp, self.gate, self.edge_index = mlp, gate, edge_index

    def forward(self, h: torch.Tensor, edge_attr: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return message_aggregate(
            h, self.edge_index, edge_attr, self.mlp, gate=self.gate, edge_weight=weight, backend="torch"
        )


def test_gate_and_edge_weight_gradcheck_and_gradgradcheck():
    """Finite differences, first and second order, through the gate and the edge weights."""
    h, edge_index, edge_attr = _inputs(torch.float64, num_nodes=7, degree=2, node_dim=2, edge_dim=2, isolated=1)
    module = _GatedAggregate(edge_mlp(2, 2, 4, 3), _gate(3), edge_index)
    names = [name for name, _ in module.named_parameters()]
    weight = _edge_weight(edge_index.shape[1])

    def fn(h, edge_attr, weight, *params):
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)), (h, edge_attr, weight))

    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (h, edge_attr, weight, *params))
    assert torch.autograd.gradgradcheck(fn, (h, edge_attr, weight, *params))


@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_gate_and_edge_weight_double_backward(backend):
    """Forces by autograd through gated, envelope-weighted messages, then d/dθ of |F|^2 (training on forces)."""
    h, edge_index, _ = _inputs(torch.float64, edge_dim=0)
    pos = torch.randn(h.shape[0], 3, dtype=torch.float64, requires_grad=True)
    mlp, gate = edge_mlp(5, 1, 8, 6), _gate(6)

    def loss(fused: bool) -> torch.Tensor:
        radial = (pos[edge_index[1]] - pos[edge_index[0]]).pow(2).sum(1, keepdim=True)
        weight = torch.exp(-radial[:, 0])
        if fused:
            out = message_aggregate(h, edge_index, radial, mlp, gate=gate, edge_weight=weight, backend=backend)
        else:
            out = message_aggregate_reference(h, edge_index, radial, mlp, gate=gate, edge_weight=weight)
        (forces,) = torch.autograd.grad(out.sum(), pos, create_graph=True)
        return forces.pow(2).sum()

    inputs = [h, pos, *mlp.parameters(), *gate.parameters()]
    for g, w in zip(torch.autograd.grad(loss(True), inputs), torch.autograd.grad(loss(False), inputs), strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


def test_gate_and_edge_weight_errors():
    h, edge_index, edge_attr = _inputs(torch.float64)
    mlp = edge_mlp(5, 3, 8, 6)
    with pytest.raises(KernelError, match=r"gate must be nn.Sequential\(nn.Linear\(H2, 1\), nn.Sigmoid\(\)\)"):
        message_aggregate(h, edge_index, edge_attr, mlp, gate=nn.Linear(6, 1).double())
    with pytest.raises(KernelError, match="message width 6"):
        message_aggregate(h, edge_index, edge_attr, mlp, gate=_gate(5))
    with pytest.raises(KernelError, match=r"edge_weight must be \[E\]"):
        message_aggregate(h, edge_index, edge_attr, mlp, edge_weight=torch.ones(3, dtype=torch.float64))
    with pytest.raises(KernelError, match="edge_weight must be"):
        message_aggregate(h, edge_index, edge_attr, mlp, edge_weight=torch.ones(edge_index.shape[1]))


@needs_scatter
def test_torch_scatter_refuses_second_derivatives():
    """torch-scatter's backward is not differentiable: asking it for forces to train on must fail loudly."""
    h, edge_index, _ = _inputs(torch.float64, edge_dim=0)
    pos = torch.randn(h.shape[0], 3, dtype=torch.float64, requires_grad=True)
    mlp = edge_mlp(5, 1, 8, 6)
    radial = (pos[edge_index[1]] - pos[edge_index[0]]).pow(2).sum(1, keepdim=True)
    out = message_aggregate(h, edge_index, radial, mlp, backend="torch_scatter")
    torch.autograd.grad(out.sum(), pos, retain_graph=True)  # first derivatives are fine
    with pytest.raises(KernelError, match="first derivatives only"):
        torch.autograd.grad(out.sum(), pos, create_graph=True)
