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


@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize(
    ("config", "hidden", "out"),
    [
        # segment reduction: several column tiles per graph, small edge steps, pipelined CSR loop, few warps,
        # 4 rows per program (45 nodes: the last program has one row)
        (dict(block_n=4, block_e=16, block_o=16, num_warps=2, num_stages=2), 40, None),
        # one-hot reduction: the same, exact float32 sums
        (
            dict(reduction="onehot", block_n=32, block_e=16, block_o=16, num_warps=2, num_stages=2, exact_sums=True),
            40,
            None,
        ),
        # two-layer messages in 16-column tiles of W_2, wide edge steps, both reductions (segment: 16 rows)
        (dict(block_e=64, block_o=16, num_warps=4, num_stages=3), 16, 40),
        (dict(block_n=2), 16, 40),
        (dict(reduction="onehot", block_n=16, block_e=64, block_o=16, num_warps=4, num_stages=3), 16, 40),
    ],
)
def test_launch_configs(layout, config, hidden, out):
    """Non-default tiles (what benchmarks/triton_sweep.py tries) compute the same messages; the default
    configuration is restored afterwards."""
    from zoo.kernels import _triton_message

    case = make_case(torch.float32, "cpu", 45, 7, 6, 1, hidden, out)
    with _triton_message.launch_config(_triton_message.LaunchConfig(**config)):
        check_parity(*case, backend="triton", layout=layout, reduce="sum")
    assert _triton_message._CONFIG == _triton_message.LaunchConfig()


@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize(
    ("out", "gate_bias", "with_gate", "with_weight", "reduce", "config"),
    [
        (12, True, True, True, "sum", {}),  # two-layer: the segment kernel's 16 rows share W_2 and the gate
        (None, False, True, False, "mean", {}),  # one-layer, gate without bias
        (None, False, False, True, "sum", {"reduction": "onehot"}),
        (12, True, True, True, "sum", {"reduction": "onehot", "block_o": 16}),  # one 16-column tile holds all 12
    ],
)
def test_gate_and_edge_weight(layout, out, gate_bias, with_gate, with_weight, reduce, config):
    """EGNN's attention gate and per-edge weights (cutoff envelope) fused into the Triton kernels: values and first
    derivatives against the reference, float64."""
    from zoo.kernels import _triton_message, message_aggregate_reference

    h, edge_index, edge_attr, mlp = make_case(torch.float64, "cpu", 23, 4, 5, 2, 10, out)
    width = out or 10
    torch.manual_seed(3)
    gate = nn.Sequential(nn.Linear(width, 1, bias=gate_bias), nn.Sigmoid()).double() if with_gate else None
    weight = torch.rand(edge_index.shape[1], dtype=torch.float64).requires_grad_() if with_weight else None
    kwargs = {"reduce": reduce, "gate": gate, "edge_weight": weight}
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs)
    with _triton_message.launch_config(_triton_message.LaunchConfig(**config)):
        got = message_aggregate(h, edge_index, edge_attr, mlp, layout=layout, backend="triton", **kwargs)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float64])
    inputs = [h, edge_attr, *mlp.parameters(), *([] if gate is None else gate.parameters())]
    inputs += [] if weight is None else [weight]
    grad = torch.randn_like(expected)
    for g, w in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad), strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


def _cuda_like_csr(edge_index: torch.Tensor, num_nodes: int):
    """The receiver-sorted view as build_csr makes it on CUDA: the sources with row pointers and the permutation
    that sorts them (on CPU build_csr leaves them unsorted, for scatter_add_)."""
    from zoo.kernels.segment import CSRGraph, Segments, _row_pointers

    csr = build_csr(edge_index, num_nodes)
    source = csr.sources.index
    perm = torch.argsort(source, stable=True)
    sources = Segments(source, num_nodes, ptr=_row_pointers(source[perm], num_nodes), perm=perm)
    return CSRGraph(csr.edge_index, num_nodes, csr.targets, sources)


@pytest.mark.parametrize(("hidden", "with_perm"), [(40, True), (200, True), (24, False)])
def test_segment_rows_sum(hidden, with_perm):
    """Sums of rows over segments through the sorting permutation (or over sorted rows), widths that need masking
    and two column tiles (H = 200), nodes without edges: equal to index_add_ within rounding, bitwise repeatable."""
    from zoo.kernels._triton_message import segment_rows_sum
    from zoo.kernels.segment import Segments, _row_pointers

    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, 17, (90,), generator=generator)
    index[index == 3] = 4  # node 3 has no edges
    if not with_perm:
        index = index.sort().values
    src = torch.randn(90, hidden, generator=generator, dtype=torch.float64)
    perm = torch.argsort(index, stable=True) if with_perm else None
    segments = Segments(index, 20, ptr=_row_pointers(index if perm is None else index[perm], 20), perm=perm)
    got = segment_rows_sum(src, segments)
    expected = torch.zeros(20, hidden, dtype=torch.float64).index_add_(0, index, src)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(got, segment_rows_sum(src, segments)) and not got[3].any() and not got[17:].any()


def _launched_kernels(monkeypatch) -> list[str]:
    """The names of the Triton kernels the message engine launches from now on."""
    from zoo.kernels import _triton_message

    names: list[str] = []
    launch = _triton_message.launch

    def spy(kernel, *args, **kwargs):
        names.append(kernel.fn.__name__)
        return launch(kernel, *args, **kwargs)

    monkeypatch.setattr(_triton_message, "launch", spy)
    return names


@pytest.mark.parametrize(
    ("dtype", "edge_dim", "out", "act", "with_gate", "with_weight", "reduce", "needs_h", "cuda_like"),
    [
        (torch.float64, 0, None, nn.SiLU, False, False, "sum", True, True),
        (torch.float64, 2, 12, nn.SiLU, True, True, "sum", True, True),  # EGNN: two-layer, gate, envelope weights
        (torch.float64, 20, None, nn.ReLU, True, False, "mean", True, False),  # edge features by tl.dot
        (torch.float64, 20, 16, nn.SiLU, False, True, "sum", False, False),  # only edge features and weights
        (torch.float32, 1, 24, nn.SiLU, True, True, "sum", True, False),
    ],
)
def test_input_gradients_by_the_backward_kernel(
    monkeypatch, dtype, edge_dim, out, act, with_gate, with_weight, reduce, needs_h, cuda_like
):
    """With the MLP's weights frozen (forces by autograd in the calculator), the CSR backward runs in one Triton
    kernel: gradients of node features, edge features and edge weights equal the reference, bitwise repeatable;
    with a trainable weight the PyTorch engine takes the backward (no second kernel)."""
    from zoo.kernels import message_aggregate_reference

    h, edge_index, edge_attr, mlp = make_case(dtype, "cpu", 29, 4, 5, edge_dim, 10, out, act)
    h.requires_grad_(needs_h)
    torch.manual_seed(5)
    width = out or 10
    gate = nn.Sequential(nn.Linear(width, 1), nn.Sigmoid()).to(dtype) if with_gate else None
    weight = torch.rand(edge_index.shape[1], dtype=dtype, requires_grad=True) if with_weight else None
    modules = [mlp] + ([gate] if gate is not None else [])
    for module in modules:
        module.requires_grad_(False)
    if edge_attr is not None:
        edge_attr.requires_grad_()
    inputs = [t for t in (h, edge_attr, weight) if t is not None and t.requires_grad]
    kwargs = {"reduce": reduce, "gate": gate, "edge_weight": weight}
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs)
    grad = torch.randn_like(expected)
    want = torch.autograd.grad(expected, inputs, grad)
    csr = _cuda_like_csr(edge_index, 29) if cuda_like else build_csr(edge_index, 29)
    launched = _launched_kernels(monkeypatch)
    got = message_aggregate(h, csr, edge_attr, mlp, backend="triton", **kwargs)
    first = torch.autograd.grad(got, inputs, grad)
    source_sums = ["_segment_rows_kernel"] if cuda_like and needs_h else []
    assert launched == ["_csr_segment_kernel", "_csr_backward_kernel", *source_sums]
    for g, w in zip(first, want, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[dtype])
    again = torch.autograd.grad(message_aggregate(h, csr, edge_attr, mlp, backend="triton", **kwargs), inputs, grad)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # Every weight trainable (training on energies): still one kernel, the weight gradients reduced from what it
    # stores (edge projection, second Linear: products over edges; gate: sums over rows)
    params = [param for module in modules for param in module.parameters()]
    for module in modules:
        module.requires_grad_(True)
    want = torch.autograd.grad(
        message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs), [*inputs, *params], grad
    )
    launched.clear()
    got = message_aggregate(h, csr, edge_attr, mlp, backend="triton", **kwargs)
    grads = torch.autograd.grad(got, [*inputs, *params], grad)
    assert launched == ["_csr_segment_kernel", "_csr_backward_kernel", *(["_segment_rows_kernel"] if cuda_like else [])]
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[dtype])


def test_egnn_potential_forces_with_frozen_weights_by_the_backward_kernel(monkeypatch):
    """egnn-potential as the ASE calculator runs it (eval mode, weights frozen): energies and forces on the Triton
    kernels, backward included, equal its own code."""
    import zoo
    from zoo.calculators.ase import frozen_parameters
    from zoo.graph import batch_graphs
    from zoo.kernels import set_backend
    from zoo.testing import molecule_graph

    torch.manual_seed(0)
    model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=2, cutoff=4.0, elements=[1, 6, 7, 8]).double()
    model.eval()
    graph = batch_graphs([molecule_graph(5, seed=1, cutoff=4.0), molecule_graph(4, seed=2, cutoff=4.0)])
    with frozen_parameters(model):
        expected = model(graph)
        set_backend(model, "triton")
        launched = _launched_kernels(monkeypatch)
        got = model(graph)
    assert launched.count("_csr_backward_kernel") == 2  # one per layer
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["egnn-qm9", "egnn-potential"])
def test_egnn_models_on_triton(name):
    """egnn-qm9 (attention gates) and egnn-potential (gates, cutoff-envelope edge weights, forces by autograd) on
    the Triton kernels: outputs, forces and parameter gradients equal their own code."""
    import zoo
    from zoo.graph import batch_graphs
    from zoo.kernels import set_backend
    from zoo.testing import molecule_graph

    torch.manual_seed(0)
    if name == "egnn-qm9":
        model, key = zoo.create_model(name, hidden_nf=8, n_layers=2).double(), "homo"
        graph = batch_graphs([molecule_graph(5, seed=1), molecule_graph(4, seed=2)])
    else:
        model = zoo.create_model(name, hidden_nf=8, n_layers=2, cutoff=4.0, elements=[1, 6, 7, 8]).double()
        key, graph = (
            "energy",
            batch_graphs([molecule_graph(5, seed=1, cutoff=4.0), molecule_graph(4, seed=2, cutoff=4.0)]),
        )

    def outputs_and_grads():
        out = model(graph)
        values = [out[key]] + ([out["forces"]] if "forces" in out else [])
        loss = sum(v.square().sum() for v in values)
        return values + list(torch.autograd.grad(loss, list(model.parameters())))

    expected = outputs_and_grads()
    set_backend(model, "triton")
    for g, w in zip(outputs_and_grads(), expected, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_double_backward():
    h, edge_index, _, _ = make_case(torch.float64, "cpu", 20, 4, 4, 0, 16, 16)
    mlp = edge_mlp(4, 1, 16, 16)
    pos = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    inputs = [h, pos, *mlp.parameters()]
    got = torch.autograd.grad(force_loss("triton", mlp, h, pos, edge_index), inputs)
    want = torch.autograd.grad(force_loss("reference", mlp, h, pos, edge_index), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("reduction", ["segment", "onehot"])
def test_csr_deterministic_and_empty(reduction):
    from zoo.kernels import _triton_message

    h, edge_index, edge_attr, mlp = make_case(torch.float32, "cpu", 40, 6, 4, 2, 16, 16)
    csr = build_csr(edge_index, 40)
    with _triton_message.launch_config(_triton_message.LaunchConfig(reduction=reduction)):
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


def test_tuning_sweep(monkeypatch):
    """benchmarks/triton_sweep.py's coordinate search on a tiny graph: every configuration checked against the
    torch backend (and CSR bitwise), the engine's defaults marked, the best one no slower than them."""
    import argparse

    from benchmarks import triton_sweep
    from benchmarks.workloads import Graph

    space = {"reduction": ("segment", "onehot"), "block_o": (16, 32), "block_e": (16, 64), "block_n": (2, 16)}
    monkeypatch.setattr(triton_sweep, "SPACE", {**space, "num_stages": (1, 2)})
    monkeypatch.setattr(triton_sweep, "CSR_ONLY", ("reduction", "block_n", "num_stages"))
    _, edge_index, _, _ = make_case(torch.float32, "cpu", 24, 4, 16, 0, 16, None)
    edge_index = edge_index[:, torch.argsort(edge_index[1], stable=True)]
    graph = Graph("tiny", torch.zeros(24, 3), edge_index, build_csr(edge_index, 24))
    monkeypatch.setattr(triton_sweep, "BACKWARD_SPACE", {"block_e": (16, 32), "num_warps": (2, 4)})
    args = argparse.Namespace(runs=1, warmup=0, passes=1)
    for layout in ("csr", "atomic", "csr-backward"):
        rows = triton_sweep.sweep_case(graph, 16, layout, False, 1.0, args)
        assert rows and all(row["ok"] for row in rows), rows
        assert sum(row["default"] for row in rows) == 1 and sum(row["best"] for row in rows) == 1
        default = next(row for row in rows if row["default"])
        best = next(row for row in rows if row["best"])
        assert best["kernel_ms"] <= default["kernel_ms"]
        assert ("num_stages" in best["config"]) == (layout == "csr")
        if layout == "csr-backward":  # the backward kernel's own fields, checked against the PyTorch engine
            assert all(row["bitwise_repeatable"] and set(row["config"]) == {"block_e", "num_warps"} for row in rows)
            assert {row["config"]["num_warps"] for row in rows} == {2, 4}
        if layout == "csr":
            assert all(row["bitwise_repeatable"] for row in rows)
            # both reductions tried, each launch once; the one-hot one never with fewer than 16 rows per program
            reductions = [row["config"]["reduction"] for row in rows]
            assert "onehot" in reductions and "segment" in reductions
            assert len({tuple(sorted(row["config"].items())) for row in rows}) == len(rows)
            assert {1, 16} <= {row["config"]["block_n"] for row in rows}  # the segment default, the one-hot one
            assert all(row["config"]["block_n"] >= 16 for row in rows if row["config"]["reduction"] == "onehot")
    assert "| tiny (24," in triton_sweep.markdown(
        {"device_name": "cpu", "torch": "x", "triton": "y", "copy_gbs": 1.0, "runs": 1, "rows": rows}
    )
