r"""Message passing over chunks of edges, so that peak memory scales with the chunk and not with all edges.

In a deep message-passing layer the per-edge tensors (edge embeddings, features rotated into edge frames,
SO(2) messages, edge-MLP activations) dominate memory: :math:`E \approx 20\text{-}50\, N` of them against :math:`N` node
rows. A layer whose messages are summed at their targets,

.. math:: a_i = \sum_{j \in \mathcal{N}(i)} \phi(x_i, x_j, e_{ij}),

can compute them for one block of targets at a time: edges sorted by target (:func:`zoo.graph.neighbor_list`
gives them so) are cut into chunks of whole, contiguous target ranges (:func:`edge_chunks`), and
:func:`chunked_scatter_sum` computes each chunk's messages, sums them into that chunk's rows of the output and
frees them before the next chunk. The result equals the unchunked one to round-off.

**A node's edges are never split.** A chunk ends at the last node boundary that keeps it within ``max_edges``
edges; a node with more than ``max_edges`` incoming edges gets a chunk of its own, larger than ``max_edges``.
So every chunk holds all the incoming edges of its targets, and per-target reductions that are not sums (the
attention softmax of EquiformerV2, degree means) are exact inside a chunk, computed with the chunk's local
target indices (:attr:`EdgeChunk.target`, :attr:`EdgeChunk.num_nodes`).

**Gradients.** With gradients recorded (training, or conservative forces :math:`-\partial E / \partial x`), each
chunk runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): its activations are dropped after the
forward pass and recomputed, chunk by chunk, in the backward pass, so the backward pass also stays within one
chunk's memory. The price is one more forward pass of the messages (energy + forces of an EGNN potential on 10k
atoms: about 1.7x the CPU time for 0.06-0.13x the peak memory; ``benchmarks/chunked_memory.py``). Second
derivatives (training on forces, ``create_graph=True``) work; they keep the recomputed activations needed by the
double backward, so the saving there is smaller. Without gradients (``torch.no_grad``) nothing is recomputed, and
a direct-force model run with gradients recorded but no backward pass keeps no activations and recomputes nothing.

**The model protocol.** A model that can chunk its edges has an attribute ``edge_chunk_size`` (``int`` or
``None``) and a method ``set_edge_chunk_size(max_edges: int | None)``; ``None`` processes all edges at once.
:func:`supports_edge_chunks` checks for it and :func:`edge_chunk_size` sets it for the duration of a block
(the ASE calculator's and :func:`zoo.predict`'s ``max_edges_per_chunk``).

Example:
    >>> import torch
    >>> edge_index = torch.tensor([[1, 2, 0, 2, 0, 1, 1], [0, 0, 1, 1, 2, 2, 2]])
    >>> [(c.edges, c.nodes) for c in edge_chunks(edge_index, 3, max_edges=4)]
    [(slice(0, 4, None), slice(0, 2, None)), (slice(4, 7, None), slice(2, 3, None))]
    >>> x = torch.arange(3.0)[:, None]
    >>> out = chunked_scatter_sum(lambda chunk: x[chunk.edge_index[0]] ** 2, edge_index, 3, max_edges=2)
    >>> out.flatten().tolist()
    [5.0, 4.0, 2.0]
"""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

__all__ = [
    "EdgeChunk",
    "check_max_edges",
    "chunked_scatter_sum",
    "edge_chunk_size",
    "edge_chunks",
    "supports_edge_chunks",
]

Messages = Tensor | Sequence[Tensor]


@dataclass(frozen=True)
class EdgeChunk:
    """The edges of a contiguous range of target nodes, all of their incoming edges.

    Attributes:
        edges: which edges: index any per-edge tensor ``[E, ...]`` with ``values[chunk.edges]``. A ``slice``
            (a view, no copy) when the edges are sorted by target; a long tensor of edge ids otherwise.
        nodes: the target nodes ``nodes.start <= i < nodes.stop`` the chunk covers.
        edge_index: ``[2, e]`` the chunk's edges (source, target) in global node indices.
        target: ``[e]`` the target of each edge relative to ``nodes.start``, for reductions over the chunk's
            nodes (``index_add_`` into ``[num_nodes, ...]``, :func:`zoo.nn.segment_softmax`).
    """

    edges: slice | Tensor
    nodes: slice
    edge_index: Tensor
    target: Tensor

    @property
    def num_nodes(self) -> int:
        """Number of target nodes of the chunk (nodes without edges included)."""
        return self.nodes.stop - self.nodes.start

    @property
    def num_edges(self) -> int:
        """Number of edges of the chunk."""
        return self.edge_index.shape[1]


def check_max_edges(max_edges: int | None, name: str = "max_edges") -> int | None:
    """``max_edges`` as an ``int`` (or ``None``); a ``ValueError`` naming ``name`` unless it is a positive integer."""
    if max_edges is None:
        return None
    if isinstance(max_edges, bool) or not isinstance(max_edges, numbers.Integral) or max_edges < 1:
        raise ValueError(f"{name} must be a positive integer (edges per chunk) or None, got {max_edges!r}")
    return int(max_edges)


def edge_chunks(edge_index: Tensor, num_nodes: int, max_edges: int) -> list[EdgeChunk]:
    """Cut the edges into chunks of contiguous target ranges with at most ``max_edges`` edges each.

    The chunks partition the nodes ``0 .. num_nodes - 1`` (nodes without incoming edges included) and the
    edges. A node's incoming edges are never split: a node with more than ``max_edges`` of them is a chunk of
    its own. Edges that are not sorted by target are grouped by a stable sort (then :attr:`EdgeChunk.edges` is
    a tensor of edge ids).

    Args:
        edge_index: ``[2, E]`` long, row 0 = source, row 1 = target.
        num_nodes: :math:`N`.
        max_edges: the most edges of a chunk (exceeded only by a single node's edges).

    Returns:
        The chunks in order of their target ranges; none when ``num_nodes`` is 0.

    Raises:
        ValueError: ``max_edges`` is not a positive integer, or a target is not in ``0 .. num_nodes - 1``.
    """
    max_edges = check_max_edges(max_edges)
    if max_edges is None:
        raise ValueError("max_edges must be a positive integer, got None")
    target = edge_index[1]
    num_edges = target.shape[0]
    if num_edges and (int(target.min()) < 0 or int(target.max()) >= num_nodes):
        raise ValueError(f"edge targets must lie in 0..{num_nodes - 1}, got {int(target.min())}..{int(target.max())}")
    order = None
    if num_edges > 1 and not bool((target[1:] >= target[:-1]).all()):
        order = torch.argsort(target, stable=True)
    degree = torch.bincount(target, minlength=num_nodes)
    first_edge = [0, *torch.cumsum(degree, 0).tolist()]  # [N + 1]: edges of node n are first_edge[n]..[n + 1]
    chunks = []
    start = 0
    while start < num_nodes:
        # the last node boundary within max_edges edges of this chunk's first edge, at least one node further
        stop = max(bisect.bisect_right(first_edge, first_edge[start] + max_edges) - 1, start + 1)
        begin, end = first_edge[start], first_edge[stop]
        edges: slice | Tensor = slice(begin, end) if order is None else order[begin:end]
        chunk_index = edge_index[:, edges]
        chunks.append(EdgeChunk(edges, slice(start, stop), chunk_index, chunk_index[1] - start))
        start = stop
    return chunks


def chunked_scatter_sum(
    message_fn: Callable[[EdgeChunk], Messages],
    edge_index: Tensor,
    num_nodes: int,
    max_edges: int,
    *,
    checkpoint: bool = True,
) -> Tensor | tuple[Tensor, ...]:
    r"""Per-edge messages summed at their targets, computed chunk by chunk (:func:`edge_chunks`).

    .. math:: a_i = \sum_{e:\ \mathrm{target}(e) = i} m_e, \qquad m = \texttt{message\_fn}(\text{chunk})

    ``message_fn(chunk)`` computes the messages ``[e, ...]`` of one chunk's edges (or a tuple of such tensors,
    each summed separately) from whatever it closes over: node tensors gathered with ``chunk.edge_index``,
    per-edge tensors indexed with ``chunk.edges``. Per-target reductions inside it use ``chunk.target`` and
    ``chunk.num_nodes`` (a chunk holds all the incoming edges of its nodes). The chunk's sums land in its rows of
    the output before the next chunk runs, so only one chunk's per-edge tensors exist at a time.

    Args:
        message_fn: chunk -> messages ``[e, ...]`` or a tuple of them; it must be a pure function of the chunk
            and of the tensors it closes over (it is run again in the backward pass).
        edge_index: ``[2, E]`` long, row 0 = source, row 1 = target; sorted by target saves a sort.
        num_nodes: :math:`N`.
        max_edges: edges per chunk (see :func:`edge_chunks`).
        checkpoint: when gradients are recorded and there is more than one chunk, run each chunk under
            :func:`torch.utils.checkpoint.checkpoint` so its activations are recomputed in the backward pass
            instead of being kept; ``False`` keeps them (less time, the unchunked memory of the backward pass).

    Returns:
        ``[N, ...]`` sums (a tuple of them when ``message_fn`` returns a tuple), equal to
        ``zeros(N, ...).index_add_(0, target, messages)`` of all edges at once to round-off, gradients included.
    """
    chunks = edge_chunks(edge_index, num_nodes, max_edges) or [
        EdgeChunk(slice(0, 0), slice(0, 0), edge_index[:, :0], edge_index[1, :0])  # no nodes: empty sums
    ]
    single = False

    def chunk_sums(chunk: EdgeChunk) -> tuple[Tensor, ...]:
        nonlocal single
        messages = message_fn(chunk)
        single = isinstance(messages, Tensor)
        parts = (messages,) if single else tuple(messages)
        return tuple(m.new_zeros(chunk.num_nodes, *m.shape[1:]).index_add_(0, chunk.target, m) for m in parts)

    recompute = checkpoint and torch.is_grad_enabled() and len(chunks) > 1
    sums = [
        torch.utils.checkpoint.checkpoint(chunk_sums, chunk, use_reentrant=False) if recompute else chunk_sums(chunk)
        for chunk in chunks
    ]
    out = tuple(torch.cat(parts, dim=0) if len(parts) > 1 else parts[0] for parts in zip(*sums, strict=True))
    return out[0] if single else out


def supports_edge_chunks(model: nn.Module) -> bool:
    """Whether ``model`` follows the chunking protocol (``edge_chunk_size`` and ``set_edge_chunk_size``)."""
    return callable(getattr(model, "set_edge_chunk_size", None)) and hasattr(model, "edge_chunk_size")


@contextmanager
def edge_chunk_size(model: nn.Module, max_edges: int | None) -> Iterator[nn.Module]:
    """Within the block, ``model`` processes its edges in chunks of at most ``max_edges``; the previous setting
    is restored on exit.

    Raises:
        TypeError: the model does not follow the chunking protocol (:func:`supports_edge_chunks`).
        ValueError: ``max_edges`` is not a positive integer or ``None``.

    Example:
        >>> import zoo
        >>> model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1)
        >>> with edge_chunk_size(model, 10_000):
        ...     model.edge_chunk_size
        10000
        >>> model.edge_chunk_size is None
        True
    """
    max_edges = check_max_edges(max_edges)
    if not supports_edge_chunks(model):
        raise TypeError(
            f"{type(model).__name__} cannot process its edges in chunks (it has no set_edge_chunk_size); "
            "see zoo.nn.chunking for the protocol"
        )
    previous = model.edge_chunk_size
    model.set_edge_chunk_size(max_edges)
    try:
        yield model
    finally:
        model.set_edge_chunk_size(previous)
