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

Optional per-edge factors: an attention gate :math:`\\sigma(w_g \\cdot m_{ij} + b_g)` and edge weights
:math:`w_{ij}` multiply each message before the sum (EGNN's ``att_mlp`` and cutoff envelope), so EGNN layers
without coordinate updates fuse whole (:func:`zoo.kernels.set_backend` switches a model over).

Derivatives: every backend gives first derivatives; ``"torch"``, ``"compile"`` and ``"triton"`` also give
derivatives of any order (the backward with ``create_graph=True`` runs differentiable PyTorch ops; that is what
forces by autograd need when training on forces); ``"torch_scatter"`` raises :class:`KernelError` when asked
for a second one. :func:`message_aggregate_reference` is the literal concatenation, kept for parity tests.

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

from zoo.kernels.backends import BACKENDS, KernelError, check_layout, require_torch_scatter, resolve_backend
from zoo.kernels.segment import (
    CSRGraph,
    Segments,
    TensorMemo,
    _edge_slices,
    _gather,
    _is_sorted,
    _segment_sum,
    _segment_sum_impl,
    build_csr,
    segment_counts,
)

__all__ = [
    "ACTIVATIONS",
    "EdgeMLP",
    "check_fusable",
    "fused_aggregate",
    "message_aggregate",
    "message_aggregate_reference",
]

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

    @property
    def out_features(self) -> int:
        """Width of the messages (``H2``, or ``H`` for the one-layer form)."""
        return (self.w_target if self.w2 is None else self.w2).shape[0]

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
    w_gate: Tensor | None = None,
    b_gate: Tensor | None = None,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """Messages ``[C, H2]`` of ``C`` edges from the node projections ``p, q [N, H]`` (no autograd: in place),
    times the gate :math:`\\sigma(m \\cdot w_g + b_g)` and the edge weights when given."""
    pre = p.index_select(0, target).add_(q.index_select(0, source))
    if edge_attr is not None:
        pre.addmm_(edge_attr, w_edge.t())
    message = _act_(pre, act)
    if w2 is not None:
        message = _act_(F.linear(message, w2, b2), act)
    scale = _edge_scale(message, w_gate, b_gate, edge_weight)
    return message if scale is None else message.mul_(scale[:, None])


def _gate(message: Tensor, w_gate: Tensor, b_gate: Tensor | None) -> Tensor:
    """:math:`\\sigma(m \\cdot w_g + b_g)` ``[C]``."""
    logit = message @ w_gate
    return torch.sigmoid(logit if b_gate is None else logit + b_gate)


def _edge_scale(message: Tensor, w_gate: Tensor | None, b_gate: Tensor | None, weight: Tensor | None) -> Tensor | None:
    """The per-edge factor ``[C]`` (gate times weight), or ``None`` when there is neither."""
    scale = None if w_gate is None else _gate(message, w_gate, b_gate)
    if weight is not None:
        scale = weight if scale is None else scale * weight
    return scale


def _scale_backward(
    grad: Tensor, message: Tensor, w_gate: Tensor | None, b_gate: Tensor | None, weight: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Back through :math:`m \\mapsto s\\, m` with :math:`s = \\sigma(m \\cdot w_g + b_g)\\, w`: given the
    gradient ``grad [C, H2]`` w.r.t. the scaled message, returns ``(grad w.r.t. m [C, H2], d logit [C] or None,
    grad w.r.t. the weights [C] or None)``. Out-of-place ops only, so it is also the differentiable form."""
    inner = (grad * message).sum(1)  # [C]: grad . m
    gate = None if w_gate is None else _gate(message, w_gate, b_gate)
    scale = gate if weight is None else (weight if gate is None else gate * weight)
    grad_weight = None if weight is None else (inner if gate is None else inner * gate)
    grad_logit = None
    grad_message = grad * scale[:, None]
    if gate is not None:
        grad_logit = inner * gate * (1 - gate)
        if weight is not None:
            grad_logit = grad_logit * weight
        grad_message = grad_message + grad_logit[:, None] * w_gate
    return grad_message, grad_logit, grad_weight


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
    w_gate: Tensor | None = None,
    b_gate: Tensor | None = None,
    edge_weight: Tensor | None = None,
) -> ChunkGrads:
    """For ``C`` edges: the gradient w.r.t. the first pre-activation ``[C, H]``; with a second Linear the
    gradient w.r.t. its output ``[C, H2]`` and its input ``[C, H]`` (for the weight gradient); with a gate the
    unscaled messages ``[C, H2]`` and the gradient w.r.t. the gate's logit ``[C]``; with edge weights the
    gradient w.r.t. them ``[C]``."""
    pre = p.index_select(0, target).add_(q.index_select(0, source))
    if edge_attr is not None:
        pre.addmm_(edge_attr, w_edge.t())
    grad = grad_out.index_select(0, target)
    scaled = w_gate is not None or edge_weight is not None
    hidden = _act(pre, act) if w2 is not None or scaled else None
    z = None if w2 is None else F.linear(hidden, w2, b2)
    message = grad_logit = grad_weight = None
    if scaled:
        message = hidden if z is None else _act(z, act)
        grad, grad_logit, grad_weight = _scale_backward(grad, message, w_gate, b_gate, edge_weight)
    if z is None:
        return grad.mul_(_act_grad(pre, act)), None, None, message, grad_logit, grad_weight
    grad_z = grad.mul_(_act_grad(z, act))
    return (grad_z @ w2).mul_(_act_grad(pre, act)), grad_z, hidden, message, grad_logit, grad_weight


# (p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, edge_weight) and their gradients.
_T = Tensor | None
Inputs = tuple[Tensor, Tensor, _T, _T, _T, _T, _T, _T, _T]
Grads = tuple[_T, _T, _T, _T, _T, _T, _T, _T, _T]
ChunkGrads = tuple[Tensor, _T, _T, _T, _T, _T]
NUM_INPUTS = 9


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
    if size == segments.index.shape[0]:  # all edges (the one chunk on GPUs): the row pointers as they are, no read
        first, last, local_ptr = 0, segments.num_segments - 1, segments.ptr
    else:
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
    def _edge_chunks(plan: _Plan, width: int, device: torch.device) -> list[slice]:
        return _edge_slices(plan.num_edges, width, device, CPU_CHUNK_ELEMENTS, minimum=64)

    @staticmethod
    def _add_sums(out: Tensor, values: Tensor, segments: Segments, edges: slice) -> None:
        """``out +=`` the segment sums of one chunk (CPU: in edge order; other devices: the one chunk of all
        edges, reduced by the segments' own kernel)."""
        if values.device.type == "cpu":
            _add_chunk_sums(out, values, segments, edges)
        else:
            out += _segment_sum_impl(values, segments)

    def forward(self, inputs: Inputs, plan: _Plan, act: str) -> Tensor:
        p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = inputs
        width = p.shape[1] if w2 is None else w2.shape[0]
        target, source = plan.targets.index, plan.sources.index
        out = p.new_zeros(plan.num_nodes, width)
        for edges in self._edge_chunks(plan, max(width, p.shape[1]), p.device):
            e, t, s, w = (self._chunk(x, edges) for x in (edge_attr, target, source, weight))
            message = self.forward_chunk(p, q, t, s, e, w_edge, w2, b2, act, w_gate, b_gate, w)
            self._add_sums(out, message, plan.targets, edges)
        return out

    def backward(self, grad_out: Tensor, inputs: Inputs, plan: _Plan, act: str, needs: tuple[bool, ...]) -> Grads:
        p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = inputs
        grad_out = grad_out.contiguous()
        target, source = plan.targets.index, plan.sources.index
        grad_p, grad_q, _, grad_w_edge, grad_w2, grad_b2, grad_w_gate, grad_b_gate, _ = (
            torch.zeros_like(x) if need else None for x, need in zip(inputs, needs, strict=True)
        )
        grad_e = torch.empty_like(edge_attr) if needs[2] else None
        grad_weight = torch.empty_like(weight) if needs[8] else None
        for edges in self._edge_chunks(plan, max(p.shape[1], grad_out.shape[1]), p.device):
            e, t, s, w = (self._chunk(x, edges) for x in (edge_attr, target, source, weight))
            grad_pre, grad_z, hidden, message, grad_logit, chunk_grad_weight = self.backward_chunk(
                grad_out, p, q, t, s, e, w_edge, w2, b2, act, w_gate, b_gate, w
            )
            if grad_p is not None:
                self._add_sums(grad_p, grad_pre, plan.targets, edges)
            if grad_q is not None:
                self._add_sums(grad_q, grad_pre, plan.sources, edges)
            if grad_e is not None:
                torch.mm(grad_pre, w_edge, out=grad_e[edges])
            if grad_w_edge is not None:
                grad_w_edge.addmm_(grad_pre.t(), e)
            if grad_w2 is not None:
                grad_w2.addmm_(grad_z.t(), hidden)
            if grad_b2 is not None:
                grad_b2 += grad_z.sum(0)
            if grad_w_gate is not None:
                grad_w_gate.addmv_(message.t(), grad_logit)
            if grad_b_gate is not None:
                grad_b_gate += grad_logit.sum()
            if grad_weight is not None:
                grad_weight[edges] = chunk_grad_weight
        return grad_p, grad_q, grad_e, grad_w_edge, grad_w2, grad_b2, grad_w_gate, grad_b_gate, grad_weight


def _backward_differentiable(grad_out: Tensor, inputs: Inputs, plan: _Plan, act: str, needs: tuple[bool, ...]) -> Grads:
    """The backward pass as differentiable PyTorch ops (for ``create_graph=True``), deterministic for CSR."""
    p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = inputs
    pre = _gather(p, plan.targets) + _gather(q, plan.sources)
    if edge_attr is not None:
        pre = pre + edge_attr @ w_edge.t()
    grad = _gather(grad_out, plan.targets)
    hidden = _act(pre, act)
    z = None if w2 is None else F.linear(hidden, w2, b2)
    grad_w2 = grad_b2 = grad_w_gate = grad_b_gate = grad_weight = None
    if w_gate is not None or weight is not None:
        message = hidden if z is None else _act(z, act)
        grad, grad_logit, grad_weight = _scale_backward(grad, message, w_gate, b_gate, weight)
        if grad_logit is not None:
            grad_w_gate = grad_logit @ message if needs[6] else None
            grad_b_gate = grad_logit.sum().reshape(1) if needs[7] else None
    if z is None:
        grad_pre = grad * _act_grad(pre, act)
    else:
        grad_z = grad * _act_grad(z, act)
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
        grad_w_gate,
        grad_b_gate,
        grad_weight if needs[8] else None,
    )


class _EdgeMLPSum(torch.autograd.Function):
    """``out = segment_sum(s * mlp_tail(P[i] + Q[j] + e W_e^T))`` (``s``: gate times edge weight, when given)
    with a backend's forward and backward."""

    @staticmethod
    def forward(ctx, *args) -> Tensor:
        inputs, (plan, act, engine) = args[:NUM_INPUTS], args[NUM_INPUTS:]
        ctx.save_for_backward(*inputs)
        ctx.plan, ctx.act, ctx.engine = plan, act, engine
        return engine.forward(inputs, plan, act)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        inputs = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:NUM_INPUTS])
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
    degree = segment_counts(plan.targets.index, plan.num_nodes).clamp_(min=1)
    return out / degree.to(out.dtype)[:, None]


def _torch_scatter_forward(
    h: Tensor,
    edge_attr: Tensor | None,
    weights: EdgeMLP,
    plan: _Plan,
    w_gate: Tensor | None,
    b_gate: Tensor | None,
    edge_weight: Tensor | None,
) -> Tensor:
    """Fused projections, PyTorch autograd for gathers, ``torch_scatter`` for the sum."""
    torch_scatter = require_torch_scatter()
    target, source = plan.targets.index, plan.sources.index
    pre = F.linear(h, weights.w_target, weights.b1)[target] + F.linear(h, weights.w_source)[source]
    if edge_attr is not None:
        pre = pre + edge_attr @ weights.w_edge.t()
    message = _act(pre, weights.act)
    if weights.w2 is not None:
        message = _act(F.linear(message, weights.w2, weights.b2), weights.act)
    scale = _edge_scale(message, w_gate, b_gate, edge_weight)
    if scale is not None:
        message = message * scale[:, None]
    if plan.layout == "csr":
        out = torch_scatter.segment_csr(message, plan.targets.ptr, reduce="sum")
    else:
        out = torch_scatter.scatter(message, target, dim=0, dim_size=plan.num_nodes, reduce="sum")
    return _FirstOrderOnly.apply(out)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity whose backward refuses ``create_graph=True``: torch-scatter's reductions have no second
    derivative (their backward is not differentiable), so forces by autograd trained through them would
    silently miss terms."""

    @staticmethod
    def forward(ctx, out: Tensor) -> Tensor:
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            raise KernelError(
                "backend='torch_scatter' gives first derivatives only (torch-scatter's backward is not "
                "differentiable); second derivatives, e.g. training on forces by autograd, need backend='torch' "
                "or 'compile'"
            )
        return grad


def engine_inputs(
    h: Tensor,
    edge_attr: Tensor | None,
    weights: EdgeMLP,
    w_gate: Tensor | None = None,
    b_gate: Tensor | None = None,
    edge_weight: Tensor | None = None,
) -> Inputs:
    """What an engine's ``forward`` reads: the node projections :math:`P = h W_t^\\top + b_1`,
    :math:`Q = h W_s^\\top` (once per node instead of once per edge), then the edge and MLP tensors."""
    p = F.linear(h, weights.w_target, weights.b1)
    q = F.linear(h, weights.w_source)
    return (p, q, edge_attr, weights.w_edge, weights.w2, weights.b2, w_gate, b_gate, edge_weight)


def message_aggregate(
    h: Tensor,
    edge_index: Tensor | CSRGraph,
    edge_attr: Tensor | None,
    mlp: nn.Sequential,
    *,
    reduce: str = "sum",
    layout: str = "csr",
    backend: str = "auto",
    gate: nn.Module | None = None,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """:math:`\\mathrm{out}_i = \\mathrm{reduce}_{j \\to i}\\, s_{ij}\\, \\mathrm{mlp}([h_i, h_j, e_{ij}])`, fused,
    with :math:`s_{ij} = \\sigma(w_g \\cdot m_{ij} + b_g)\\, w_{ij}` (each factor only when given: the
    attention gate of EGNN's ``att_mlp`` and per-edge weights such as a cutoff envelope or a mask).

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
        gate: ``nn.Sequential(nn.Linear(H2, 1), nn.Sigmoid())`` (EGNN's ``att_mlp``) or ``None``.
        edge_weight: ``[E]`` per-edge factors (same dtype and device as ``h``; differentiable) or ``None``.

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
    w_gate, b_gate = _gate_weights(gate, weights.out_features)
    scaled = gate is not None or edge_weight is not None
    backend = resolve_backend(backend, h.device, triton_first=weights.w2 is None and not scaled)
    plan = _make_plan(edge_index, h.shape[0], layout)
    if edge_attr is not None and edge_attr.shape[0] != plan.num_edges:
        raise KernelError(f"edge_attr has {edge_attr.shape[0]} rows for {plan.num_edges} edges")
    if edge_weight is not None and (
        edge_weight.shape != (plan.num_edges,) or edge_weight.dtype != h.dtype or edge_weight.device != h.device
    ):
        raise KernelError(
            f"edge_weight must be [E] = [{plan.num_edges}] with h's dtype and device ({h.dtype}, {h.device}), got "
            f"{edge_weight.dtype} {list(edge_weight.shape)} on {edge_weight.device}"
        )
    if backend == "torch_scatter":
        out = _torch_scatter_forward(h, edge_attr, weights, plan, w_gate, b_gate, edge_weight)
    else:
        inputs = engine_inputs(h, edge_attr, weights, w_gate, b_gate, edge_weight)
        out = _EdgeMLPSum.apply(*inputs, plan, weights.act, _engine(backend))
    return _mean(out, plan) if reduce == "mean" else out


def _gate_weights(gate: nn.Module | None, width: int) -> tuple[Tensor | None, Tensor | None]:
    """``(w_g [H2], b_g [1] or None)`` of ``Sequential(Linear(H2, 1), Sigmoid())``, or ``(None, None)``.

    Raises:
        KernelError: another structure or width.
    """
    if gate is None:
        return None, None
    layers = list(gate) if isinstance(gate, nn.Sequential) else []
    if not (len(layers) == 2 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.Sigmoid)):
        raise KernelError(f"gate must be nn.Sequential(nn.Linear(H2, 1), nn.Sigmoid()), got {gate}")
    linear = layers[0]
    if linear.in_features != width or linear.out_features != 1:
        raise KernelError(f"gate's Linear must map the message width {width} to 1, got {linear}")
    return linear.weight[0], linear.bias


def message_aggregate_reference(
    h: Tensor,
    edge_index: Tensor,
    edge_attr: Tensor | None,
    mlp: nn.Module,
    *,
    reduce: str = "sum",
    gate: nn.Module | None = None,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """The literal computation ``mlp(cat([h[i], h[j], e]))`` summed with ``index_add``: the parity reference.

    Same arguments and result as :func:`message_aggregate`; ``mlp`` may be any module here.
    """
    source, target = edge_index[0], edge_index[1]
    parts = [h[target], h[source]] + ([] if edge_attr is None else [edge_attr])
    message = mlp(torch.cat(parts, dim=1))
    if gate is not None:
        message = message * gate(message)
    if edge_weight is not None:
        message = message * edge_weight[:, None]
    out = message.new_zeros(h.shape[0], message.shape[1]).index_add(0, target, message)
    if reduce == "mean":
        degree = segment_counts(target, h.shape[0]).clamp(min=1).to(out.dtype)
        out = out / degree[:, None]
    return out


# --- for models ---------------------------------------------------------------------------------------------------


def check_fusable(backend: str | None, mlp: nn.Sequential, node_dim: int, edge_dim: int, where: str) -> None:
    """Raise :class:`KernelError` unless ``backend`` is ``None`` or a backend name and ``mlp`` is an edge MLP
    that :func:`message_aggregate` can fuse (``where`` names the layer in the message)."""
    if backend is None:
        return
    if backend not in BACKENDS:
        raise KernelError(f"backend must be None (the model's own PyTorch code) or one of {BACKENDS}, got {backend!r}")
    try:
        EdgeMLP.from_module(mlp, node_dim, edge_dim)
    except KernelError as error:
        raise KernelError(f"{where} cannot use the fused message passing: {error}") from None


def fused_aggregate(
    h: Tensor,
    edge_index: Tensor,
    edge_attr: Tensor | None,
    mlp: nn.Sequential,
    *,
    backend: str,
    gate: nn.Module | None = None,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """:func:`message_aggregate` (sum) for a model's layer: the deterministic ``"csr"`` layout when the edges
    are sorted by target (as ``zoo.graph.neighbor_list`` returns them), else ``"atomic"``. The receiver-sorted
    view is built once for consecutive calls with the same ``edge_index`` tensor (the layers of one forward pass:
    one check, one set of row pointers and, on GPUs, one sort of the sources, instead of one per layer)."""
    edges = _layer_edges(edge_index, h.shape[0])
    layout = "csr" if isinstance(edges, CSRGraph) else "atomic"
    return message_aggregate(
        h, edges, edge_attr, mlp, layout=layout, backend=backend, gate=gate, edge_weight=edge_weight
    )


# Per edge_index tensor and node count: its receiver-sorted view's pointers, or that its targets are unsorted.
_EDGE_MEMO = TensorMemo(2)


def _layer_edges(edge_index: Tensor, num_nodes: int) -> Tensor | CSRGraph:
    """``edge_index``'s :class:`CSRGraph` when its targets are sorted, else ``edge_index``; the check, the row
    pointers and the sort of the sources are remembered for the edge tensors last seen (:class:`TensorMemo`)."""
    values = _EDGE_MEMO.lookup(edge_index, num_nodes)
    if values is None:
        graph = build_csr(edge_index, num_nodes) if _is_sorted(edge_index[1]) else None
        parts = {} if graph is None else {"targets": graph.targets, "sources": graph.sources}
        values = _EDGE_MEMO.store(edge_index, num_nodes, {k: (v.ptr, v.perm) for k, v in parts.items()})
    if not values:
        return edge_index
    (target_ptr, _), (source_ptr, perm) = values["targets"], values["sources"]
    source, target = edge_index[0], edge_index[1]
    targets = Segments(target, num_nodes, ptr=target_ptr)
    return CSRGraph(edge_index, num_nodes, targets, Segments(source, num_nodes, ptr=source_ptr, perm=perm))
