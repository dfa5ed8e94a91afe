"""Fused message passing: gather -> per-edge MLP -> sum or mean at the targets, in one op.

For an edge :math:`j \\to i` with features :math:`e_{ij}` the message is the EGNN edge MLP

.. math::

    m_{ij} = \\sigma\\big(W_2\\, \\sigma(W_1 [h_i, h_j, e_{ij}] + b_1) + b_2\\big),
    \\qquad \\mathrm{out}_i = \\sum_{j \\to i} m_{ij} \\;\\;(\\text{or the mean}),

with :math:`\\sigma` SiLU or ReLU (or the one-layer form :math:`m_{ij} = \\sigma(W_1 [h_i, h_j, e_{ij}] + b_1)`).
The first Linear splits exactly along its input columns,
:math:`W_1 [h_i, h_j, e] = W_t h_i + W_s h_j + W_e e`, so the fused backends compute the node projections
:math:`P = h W_t^\\top + b_1` and :math:`Q = h W_s^\\top` once per node (``N << E``) and only gather and add per
edge. No ``[E, H]`` tensor is kept for the backward pass: it is recomputed from ``P``, ``Q`` and ``e``.

Derivatives: every backend gives first derivatives; ``"torch"``, ``"compile"`` and ``"triton"`` also give
derivatives of any order (the backward with ``create_graph=True`` runs differentiable PyTorch ops; that is what
forces by autograd need when training on forces). :func:`message_aggregate_reference` is the literal
concatenation, kept for parity tests.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from zoo.kernels import message_aggregate, message_aggregate_reference
    >>> h, edge_attr = torch.randn(4, 8), torch.randn(3, 1)
    >>> edge_index = torch.tensor([[1, 2, 0], [0, 0, 3]])  # j -> i, sorted by target i
    >>> edge_mlp = nn.Sequential(nn.Linear(2 * 8 + 1, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU())
    >>> out = message_aggregate(h, edge_index, edge_attr, edge_mlp)
    >>> out.shape
    torch.Size([4, 16])
    >>> torch.allclose(out, message_aggregate_reference(h, edge_index, edge_attr, edge_mlp), atol=1e-5)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.kernels.backends import KernelError, check_layout, require_torch_scatter, resolve_backend
from zoo.kernels.segment import CSRGraph, Segments, _gather, _segment_sum, _segment_sum_impl, build_csr

__all__ = ["ACTIVATIONS", "EdgeMLP", "message_aggregate", "message_aggregate_reference"]

ACTIVATIONS: dict[type[nn.Module], str] = {nn.SiLU: "silu", nn.ReLU: "relu"}
# On CPU the fused backends process edges in chunks whose [chunk, H] temporaries hold about this many
# elements (4 MiB in float32): small enough to stay in cache, large enough to keep few parallel regions per call.
CPU_CHUNK_ELEMENTS = 2**20


@dataclass(frozen=True, eq=False)
class EdgeMLP:
    """The weights of an edge MLP split for fusion; built by :meth:`from_module`, not by hand.

    Attributes:
        w_target: ``[H, F]`` columns of :math:`W_1` that multiply :math:`h_i`.
        w_source: ``[H, F]`` columns that multiply :math:`h_j`.
        w_edge: ``[H, D]`` columns that multiply :math:`e_{ij}`, or ``None`` when ``D = 0``.
        b1: ``[H]`` or ``None``.
        w2: ``[H2, H]`` second Linear, or ``None`` for the one-layer form.
        b2: ``[H2]`` or ``None``.
        act: ``"silu"`` or ``"relu"``.
    """

    w_target: Tensor
    w_source: Tensor
    w_edge: Tensor | None
    b1: Tensor | None
    w2: Tensor | None
    b2: Tensor | None
    act: str

    @classmethod
    def from_module(cls, mlp: nn.Sequential, node_dim: int, edge_dim: int) -> EdgeMLP:
        """Split ``Sequential(Linear(2F + D, H), act[, Linear(H, H2), act])`` (act: SiLU or ReLU).

        Raises:
            KernelError: another structure, activation or input width.
        """
        layers = list(mlp) if isinstance(mlp, nn.Sequential) else []
        shape_ok = len(layers) in (2, 4) and all(isinstance(m, nn.Linear) for m in layers[::2])
        acts = [ACTIVATIONS.get(type(m)) for m in layers[1::2]]
        if not shape_ok or None in acts or len(set(acts)) != 1:
            raise KernelError(
                "mlp must be nn.Sequential(Linear, act) or nn.Sequential(Linear, act, Linear, act) with act "
                f"one of {[c.__name__ for c in ACTIVATIONS]} (the same twice), got {mlp}"
            )
        first = layers[0]
        if first.in_features != 2 * node_dim + edge_dim:
            raise KernelError(
                f"mlp[0] takes {first.in_features} inputs but [h_i, h_j, edge_attr] has "
                f"2 * {node_dim} + {edge_dim} = {2 * node_dim + edge_dim}"
            )
        weight = first.weight
        second = layers[2] if len(layers) == 4 else None
        if second is not None and second.in_features != first.out_features:
            raise KernelError(f"mlp[2] takes {second.in_features} inputs, mlp[0] gives {first.out_features}")
        return cls(
            w_target=weight[:, :node_dim],
            w_source=weight[:, node_dim : 2 * node_dim],
            w_edge=weight[:, 2 * node_dim :] if edge_dim > 0 else None,
            b1=first.bias,
            w2=None if second is None else second.weight,
            b2=None if second is None else second.bias,
            act=acts[0],
        )


def _act(x: Tensor, act: str) -> Tensor:
    return F.silu(x) if act == "silu" else F.relu(x)


def _act_(x: Tensor, act: str) -> Tensor:
    """In place (no autograd)."""
    return F.silu(x, inplace=True) if act == "silu" else F.relu_(x)


def _act_grad(x: Tensor, act: str) -> Tensor:
    """:math:`\\sigma'(x)`, written with differentiable ops (SiLU: :math:`s(1 + x(1 - s))`, s = sigmoid)."""
    if act == "silu":
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
    return (x > 0).to(x.dtype)


@dataclass(frozen=True, eq=False)
class _Plan:
    """Edges of one call: target and source segments, and the layout they were built for."""

    targets: Segments
    sources: Segments
    num_nodes: int
    layout: str

    @property
    def num_edges(self) -> int:
        return self.targets.index.shape[0]


def _make_plan(edge_index: Tensor | CSRGraph, num_nodes: int, layout: str) -> _Plan:
    if isinstance(edge_index, CSRGraph):
        if edge_index.num_nodes != num_nodes:
            raise KernelError(f"the CSRGraph has {edge_index.num_nodes} nodes, h has {num_nodes}")
        graph = edge_index
    elif layout == "csr":
        graph = build_csr(edge_index, num_nodes)
    else:
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
            raise KernelError(f"edge_index must be [2, E] torch.long, got {edge_index.dtype} {edge_index.shape}")
        source, target = edge_index[0], edge_index[1]
        return _Plan(Segments(target, num_nodes), Segments(source, num_nodes), num_nodes, layout)
    if layout == "atomic":
        return _Plan(
            Segments(graph.targets.index, num_nodes), Segments(graph.sources.index, num_nodes), num_nodes, layout
        )
    return _Plan(graph.targets, graph.sources, num_nodes, layout)


# --- per-edge math shared by the eager and compiled engines -------------------------------------------------


def _forward_chunk(
    p: Tensor,
    q: Tensor,
    target: Tensor,
    source: Tensor,
    edge_attr: Tensor | None,
    w_edge: Tensor | None,
    w2: Tensor | None,
    b2: Tensor | None,
    act: str,
) -> Tensor:
    """Messages ``[C, H2]`` of ``C`` edges from the node projections ``p, q [N, H]`` (no autograd: in place)."""
    pre = p.index_select(0, target).add_(q.index_select(0, source))
    if edge_attr is not None:
        pre.addmm_(edge_attr, w_edge.t())
    message = _act_(pre, act)
    if w2 is not None:
        message = _act_(F.linear(message, w2, b2), act)
    return message


def _backward_chunk(
    grad_out: Tensor,
    p: Tensor,
    q: Tensor,
    target: Tensor,
    source: Tensor,
    edge_attr: Tensor | None,
    w_edge: Tensor | None,
    w2: Tensor | None,
    b2: Tensor | None,
    act: str,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """For ``C`` edges: the gradient w.r.t. the first pre-activation ``[C, H]`` and, with a second Linear,
    the gradient w.r.t. its output ``[C, H2]`` and its input ``[C, H]`` (for the weight gradient)."""
    pre = p.index_select(0, target).add_(q.index_select(0, source))
    if edge_attr is not None:
        pre.addmm_(edge_attr, w_edge.t())
    grad = grad_out.index_select(0, target)
    if w2 is None:
        return grad.mul_(_act_grad(pre, act)), None, None
    hidden = _act(pre, act)
    grad_z = grad.mul_(_act_grad(F.linear(hidden, w2, b2), act))
    return (grad_z @ w2).mul_(_act_grad(pre, act)), grad_z, hidden


Inputs = tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]
Grads = tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None]


def _add_chunk_sums(out: Tensor, values: Tensor, segments: Segments, edges: slice) -> None:
    """``out += segment sums of values [C, H]`` (the rows of ``edges``) over ``segments``, in edge order.

    Sorted segments (row pointers, no permutation): a product with the chunk's 0/1 CSR matrix
    (``torch.sparse.mm(..., "sum")``: one parallel loop over rows, each summed in order; no sort). Others:
    ``scatter_add_`` (sorts its index first).
    """
    if segments.ptr is None or segments.perm is not None:
        out.scatter_add_(0, segments.index[edges, None].expand_as(values), values)
        return
    size = edges.stop - edges.start
    first, last = int(segments.index[edges.start]), int(segments.index[edges.stop - 1])
    local_ptr = (segments.ptr[first : last + 2] - edges.start).clamp_(0, size)
    columns = torch.arange(size, device=values.device)
    ones = torch.ones(size, dtype=values.dtype, device=values.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(local_ptr, columns, ones, (last - first + 1, size), check_invariants=False)
        out[first : last + 1] += torch.sparse.mm(matrix, values, "sum")


class _ChunkedEngine:
    """Runs :func:`_forward_chunk` / :func:`_backward_chunk` (eager or compiled) over chunks of edges.

    CPU: chunks of about :data:`CPU_CHUNK_ELEMENTS` elements, each reduced in edge order by
    :func:`_add_chunk_sums` (deterministic). Other devices: one chunk, reduced by the plan's segments
    (``segment_reduce`` for CSR).
    """

    def __init__(
        self, forward_chunk: Callable[..., Tensor], backward_chunk: Callable[..., tuple], copy_chunks: bool
    ) -> None:
        self.forward_chunk = forward_chunk
        self.backward_chunk = backward_chunk
        # torch.compile guards on the storage offsets of views: compiled chunk functions get fresh tensors.
        self.copy_chunks = copy_chunks

    def _chunk(self, tensor: Tensor | None, edges: slice) -> Tensor | None:
        if tensor is None:
            return None
        return tensor[edges].clone() if self.copy_chunks else tensor[edges]

    @staticmethod
    def _cpu_chunks(num_edges: int, width: int) -> list[slice]:
        size = max(64, CPU_CHUNK_ELEMENTS // max(width, 1))
        return [slice(start, min(start + size, num_edges)) for start in range(0, num_edges, size)]

    def forward(self, inputs: Inputs, plan: _Plan, act: str) -> Tensor:
        p, q, edge_attr, w_edge, w2, b2 = inputs
        width = p.shape[1] if w2 is None else w2.shape[0]
        target, source = plan.targets.index, plan.sources.index
        if p.device.type != "cpu":
            message = self.forward_chunk(p, q, target, source, edge_attr, w_edge, w2, b2, act)
            return _segment_sum_impl(message, plan.targets)
        out = p.new_zeros(plan.num_nodes, width)
        for edges in self._cpu_chunks(plan.num_edges, max(width, p.shape[1])):
            e, chunk_target, chunk_source = (self._chunk(t, edges) for t in (edge_attr, target, source))
            message = self.forward_chunk(p, q, chunk_target, chunk_source, e, w_edge, w2, b2, act)
            _add_chunk_sums(out, message, plan.targets, edges)
        return out

    def backward(self, grad_out: Tensor, inputs: Inputs, plan: _Plan, act: str, needs: tuple[bool, ...]) -> Grads:
        p, q, edge_attr, w_edge, w2, b2 = inputs
        grad_out = grad_out.contiguous()
        target, source = plan.targets.index, plan.sources.index
        if p.device.type != "cpu":
            grad_pre, grad_z, hidden = self.backward_chunk(
                grad_out, p, q, target, source, edge_attr, w_edge, w2, b2, act
            )
            grad_p = _segment_sum_impl(grad_pre, plan.targets) if needs[0] else None
            grad_q = _segment_sum_impl(grad_pre, plan.sources) if needs[1] else None
            grad_e = grad_pre @ w_edge if needs[2] else None
            grad_w_edge = grad_pre.t() @ edge_attr if needs[3] else None
            grad_w2 = grad_z.t() @ hidden if needs[4] else None
            grad_b2 = grad_z.sum(0) if needs[5] else None
            return grad_p, grad_q, grad_e, grad_w_edge, grad_w2, grad_b2
        grad_p = torch.zeros_like(p) if needs[0] else None
        grad_q = torch.zeros_like(q) if needs[1] else None
        grad_e = torch.empty_like(edge_attr) if needs[2] else None
        grad_w_edge = torch.zeros_like(w_edge) if needs[3] else None
        grad_w2 = torch.zeros_like(w2) if needs[4] else None
        grad_b2 = torch.zeros_like(b2) if needs[5] else None
        for edges in self._cpu_chunks(plan.num_edges, max(p.shape[1], grad_out.shape[1])):
            e, chunk_target, chunk_source = (self._chunk(t, edges) for t in (edge_attr, target, source))
            grad_pre, grad_z, hidden = self.backward_chunk(
                grad_out, p, q, chunk_target, chunk_source, e, w_edge, w2, b2, act
            )
            if grad_p is not None:
                _add_chunk_sums(grad_p, grad_pre, plan.targets, edges)
            if grad_q is not None:
                _add_chunk_sums(grad_q, grad_pre, plan.sources, edges)
            if grad_e is not None:
                torch.mm(grad_pre, w_edge, out=grad_e[edges])
            if grad_w_edge is not None:
                grad_w_edge.addmm_(grad_pre.t(), e)
            if grad_w2 is not None:
                grad_w2.addmm_(grad_z.t(), hidden)
            if grad_b2 is not None:
                grad_b2 += grad_z.sum(0)
        return grad_p, grad_q, grad_e, grad_w_edge, grad_w2, grad_b2


def _backward_differentiable(grad_out: Tensor, inputs: Inputs, plan: _Plan, act: str, needs: tuple[bool, ...]) -> Grads:
    """The backward pass as differentiable PyTorch ops (for ``create_graph=True``), deterministic for CSR."""
    p, q, edge_attr, w_edge, w2, b2 = inputs
    pre = _gather(p, plan.targets) + _gather(q, plan.sources)
    if edge_attr is not None:
        pre = pre + edge_attr @ w_edge.t()
    grad = _gather(grad_out, plan.targets)
    grad_w2 = grad_b2 = None
    if w2 is None:
        grad_pre = grad * _act_grad(pre, act)
    else:
        hidden = _act(pre, act)
        grad_z = grad * _act_grad(F.linear(hidden, w2, b2), act)
        grad_w2 = grad_z.t() @ hidden if needs[4] else None
        grad_b2 = grad_z.sum(0) if needs[5] else None
        grad_pre = (grad_z @ w2) * _act_grad(pre, act)
    return (
        _segment_sum(grad_pre, plan.targets) if needs[0] else None,
        _segment_sum(grad_pre, plan.sources) if needs[1] else None,
        grad_pre @ w_edge if needs[2] else None,
        grad_pre.t() @ edge_attr if needs[3] else None,
        grad_w2,
        grad_b2,
    )


class _EdgeMLPSum(torch.autograd.Function):
    """``out = segment_sum(mlp_tail(P[i] + Q[j] + e W_e^T))`` with a backend's forward and backward."""

    @staticmethod
    def forward(ctx, p, q, edge_attr, w_edge, w2, b2, plan: _Plan, act: str, engine) -> Tensor:
        inputs = (p, q, edge_attr, w_edge, w2, b2)
        ctx.save_for_backward(*inputs)
        ctx.plan, ctx.act, ctx.engine = plan, act, engine
        return engine.forward(inputs, plan, act)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        inputs = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:6])
        if torch.is_grad_enabled():
            grads = _backward_differentiable(grad_out, inputs, ctx.plan, ctx.act, needs)
        else:
            grads = ctx.engine.backward(grad_out, inputs, ctx.plan, ctx.act, needs)
        return (*grads, None, None, None)


_EAGER = _ChunkedEngine(_forward_chunk, _backward_chunk, copy_chunks=False)
_COMPILED: list[_ChunkedEngine] = []


def _compiled_engine() -> _ChunkedEngine:
    """The chunk functions through ``torch.compile`` (built once per process, compiled on first call)."""
    if not _COMPILED:
        _COMPILED.append(
            _ChunkedEngine(
                torch.compile(_forward_chunk, dynamic=True),
                torch.compile(_backward_chunk, dynamic=True),
                copy_chunks=True,
            )
        )
    return _COMPILED[0]


def _engine(backend: str):
    if backend == "torch":
        return _EAGER
    if backend == "compile":
        return _compiled_engine()
    from zoo.kernels import _triton_message

    return _triton_message.ENGINE


def _check_inputs(h: Tensor, edge_attr: Tensor | None) -> None:
    if h.dim() != 2 or not h.is_floating_point():
        raise KernelError(f"h must be a float [N, F] tensor, got {h.dtype} {list(h.shape)}")
    if edge_attr is not None:
        if edge_attr.dim() != 2 or edge_attr.dtype != h.dtype or edge_attr.device != h.device:
            raise KernelError(
                f"edge_attr must be [E, D] with h's dtype and device ({h.dtype}, {h.device}), got "
                f"{edge_attr.dtype} {list(edge_attr.shape)} on {edge_attr.device}"
            )


def _mean(out: Tensor, plan: _Plan) -> Tensor:
    degree = torch.bincount(plan.targets.index, minlength=plan.num_nodes).clamp_(min=1)
    return out / degree.to(out.dtype)[:, None]


def _torch_scatter_forward(h: Tensor, edge_attr: Tensor | None, weights: EdgeMLP, plan: _Plan) -> Tensor:
    """Fused projections, PyTorch autograd for gathers, ``torch_scatter`` for the sum."""
    torch_scatter = require_torch_scatter()
    target, source = plan.targets.index, plan.sources.index
    pre = F.linear(h, weights.w_target, weights.b1)[target] + F.linear(h, weights.w_source)[source]
    if edge_attr is not None:
        pre = pre + edge_attr @ weights.w_edge.t()
    message = _act(pre, weights.act)
    if weights.w2 is not None:
        message = _act(F.linear(message, weights.w2, weights.b2), weights.act)
    if plan.layout == "csr":
        return torch_scatter.segment_csr(message, plan.targets.ptr, reduce="sum")
    return torch_scatter.scatter(message, target, dim=0, dim_size=plan.num_nodes, reduce="sum")


def message_aggregate(
    h: Tensor,
    edge_index: Tensor | CSRGraph,
    edge_attr: Tensor | None,
    mlp: nn.Sequential,
    *,
    reduce: str = "sum",
    layout: str = "csr",
    backend: str = "auto",
) -> Tensor:
    """:math:`\\mathrm{out}_i = \\mathrm{reduce}_{j \\to i}\\, \\mathrm{mlp}([h_i, h_j, e_{ij}])`, fused.

    A model keeps its edge MLP as an ``nn.Sequential`` (state-dict keys ``edge_mlp.0.weight``, ...) and
    passes it here instead of calling it on concatenated edge features.

    Args:
        h: ``[N, F]`` float node features.
        edge_index: ``[2, E]`` long (row 0 = source :math:`j`, row 1 = target :math:`i`), or a
            :class:`~zoo.kernels.CSRGraph` from :func:`~zoo.kernels.build_csr`, built once and shared by the
            layers of a model. With ``layout="csr"`` a plain ``edge_index`` must be sorted by target
            (``zoo.graph.neighbor_list`` returns it so); unsorted edges raise :class:`KernelError`.
        edge_attr: ``[E, D]`` edge features (same dtype and device as ``h``), or ``None`` (``D = 0``).
        mlp: ``nn.Sequential(Linear(2F + D, H), act, Linear(H, H2), act)`` or ``nn.Sequential(Linear(2F + D,
            H), act)``, act ``nn.SiLU`` or ``nn.ReLU``.
        reduce: ``"sum"`` or ``"mean"`` (over incoming edges; nodes without incoming edges get zeros).
        layout: ``"csr"`` (deterministic: bitwise identical results and gradients run to run) or
            ``"atomic"`` (any edge order; atomic additions on CUDA).
        backend: ``"auto"``, ``"torch"``, ``"compile"``, ``"triton"`` or ``"torch_scatter"``
            (see :mod:`zoo.kernels.backends`).

    Returns:
        ``[N, H2]`` (``[N, H]`` for the one-layer form) in ``h``'s dtype.

    Raises:
        KernelError: bad shapes or dtypes, an unsupported ``mlp``, unsorted edges with ``layout="csr"``, or a
            backend that cannot run here.
    """
    check_layout(layout)
    if reduce not in ("sum", "mean"):
        raise KernelError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    _check_inputs(h, edge_attr)
    edge_dim = 0 if edge_attr is None else edge_attr.shape[1]
    weights = EdgeMLP.from_module(mlp, h.shape[1], edge_dim)
    backend = resolve_backend(backend, h.device, two_layer=weights.w2 is not None)
    plan = _make_plan(edge_index, h.shape[0], layout)
    if edge_attr is not None and edge_attr.shape[0] != plan.num_edges:
        raise KernelError(f"edge_attr has {edge_attr.shape[0]} rows for {plan.num_edges} edges")
    if backend == "torch_scatter":
        out = _torch_scatter_forward(h, edge_attr, weights, plan)
    else:
        p = F.linear(h, weights.w_target, weights.b1)
        q = F.linear(h, weights.w_source)
        out = _EdgeMLPSum.apply(
            p, q, edge_attr, weights.w_edge, weights.w2, weights.b2, plan, weights.act, _engine(backend)
        )
    return _mean(out, plan) if reduce == "mean" else out


def message_aggregate_reference(
    h: Tensor, edge_index: Tensor, edge_attr: Tensor | None, mlp: nn.Module, *, reduce: str = "sum"
) -> Tensor:
    """The literal computation ``mlp(cat([h[i], h[j], e]))`` summed with ``index_add``: the parity reference.

    Same arguments and result as :func:`message_aggregate`; ``mlp`` may be any module here.
    """
    source, target = edge_index[0], edge_index[1]
    parts = [h[target], h[source]] + ([] if edge_attr is None else [edge_attr])
    message = mlp(torch.cat(parts, dim=1))
    out = message.new_zeros(h.shape[0], message.shape[1]).index_add(0, target, message)
    if reduce == "mean":
        degree = torch.bincount(target, minlength=h.shape[0]).clamp(min=1).to(out.dtype)
        out = out / degree[:, None]
    return out
