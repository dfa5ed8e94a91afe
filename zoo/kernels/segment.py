"""Segment sums over edges, and the receiver-sorted (CSR) view of a graph that makes them deterministic.

Two layouts reduce per-edge rows ``src [E, ...]`` into per-node rows ``out [N, ...]``:

- ``"csr"``: edges sorted by their segment (the target node, row 1 of ``edge_index``). Every output row is a
  sum in edge order, so results are bitwise identical from run to run on every device. Gradients too: the
  sum's gradient is a gather, and a gather's gradient is a segment sum over the same :class:`Segments`, which
  for unsorted indices (sources) goes through a stable sort computed once per graph.
- ``"atomic"``: any edge order; ``index_add_``. On CUDA the additions are atomic, so the last bits of a sum
  can change from run to run. On CPU both layouts are deterministic.

Implementations (no autograd inside): on CPU ``scatter_add_`` with an expanded index, which PyTorch computes by
a stable sort of the index and an ordered sum per row (deterministic and the fastest CPU path); on CUDA
``torch.segment_reduce`` over row pointers (deterministic, one ordered pass per segment) or ``index_add_``
(atomic). ``torch_scatter`` is an optional peer: ``backend="torch_scatter"``.

Example:
    >>> import torch
    >>> from zoo.kernels import segment_sum
    >>> src = torch.tensor([[1.0], [2.0], [4.0]])
    >>> segment_sum(src, torch.tensor([0, 0, 2]), 3).flatten().tolist()
    [3.0, 0.0, 4.0]
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.kernels.backends import KernelError, check_layout, require_torch_scatter

__all__ = ["CSRGraph", "Segments", "build_csr", "segment_sum", "sort_by_target"]


@dataclass(frozen=True, eq=False)
class Segments:
    """How the edges of a graph fall into per-node segments along one side (targets or sources).

    Attributes:
        index: ``[E]`` long segment (node) of each edge.
        num_segments: number of nodes ``N``.
        ptr: ``[N + 1]`` long row pointers of the sorted edges when ``index`` is sorted (or after ``perm``),
            else ``None``.
        perm: ``[E]`` long stable permutation that sorts ``index``, or ``None`` if ``index`` is sorted or the
            reduction may be atomic.
    """

    index: Tensor
    num_segments: int
    ptr: Tensor | None = None
    perm: Tensor | None = None


@dataclass(frozen=True, eq=False)
class CSRGraph:
    """Receiver-sorted view of ``edge_index``: built once per graph, shared by every layer that uses it.

    Attributes:
        edge_index: ``[2, E]`` long, row 0 = source :math:`j`, row 1 = target :math:`i`, row 1 nondecreasing.
        num_nodes: ``N``.
        targets: segments of the targets (sorted, with row pointers).
        sources: segments of the sources (with a stable sorting permutation on CUDA, for deterministic
            gradients).
    """

    edge_index: Tensor
    num_nodes: int
    targets: Segments
    sources: Segments

    @property
    def ptr(self) -> Tensor:
        """``[N + 1]`` long row pointers: the edges into node ``i`` are ``ptr[i]:ptr[i + 1]``."""
        assert self.targets.ptr is not None
        return self.targets.ptr

    @property
    def in_degree(self) -> Tensor:
        """``[N]`` long number of incoming edges of each node."""
        return self.ptr.diff()


class TensorMemo:
    """Values derived from an index tensor (its check, row pointers, a sort), remembered for the ``size`` tensors
    last seen, so that the layers of one forward pass (and its backward) derive them once instead of once per
    call: each check or sortedness test is a host-device sync on GPUs.

    A tensor matches an entry when it has the same storage owner (held weakly: a freed tensor never matches and
    its entry is dropped at the next store), data pointer, shape, strides, device and version counter (shared
    by views: an in-place change invalidates), and the same ``extra`` key. The tensor itself is never kept, so
    no graph is kept alive; values must not hold it either (callers rebuild what refers to it on each lookup).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: list[tuple[tuple, weakref.ref, dict]] = []

    @staticmethod
    def _key(tensor: Tensor, extra: object) -> tuple[Tensor, tuple]:
        owner = tensor._base if tensor._base is not None else tensor
        key = (id(owner), tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.device, tensor._version)
        return owner, (*key, extra)

    def lookup(self, tensor: Tensor, extra: object = None) -> dict | None:
        """The values stored for ``tensor`` (a mutable dict), or ``None``."""
        owner, key = self._key(tensor, extra)
        for entry_key, ref, values in self._entries:
            if entry_key == key and ref() is owner:
                return values
        return None

    def store(self, tensor: Tensor, extra: object = None, values: dict | None = None) -> dict:
        """Remember ``values`` (default: an empty dict to fill later) for ``tensor``; returns them."""
        owner, key = self._key(tensor, extra)
        values = {} if values is None else values
        alive = [entry for entry in self._entries if entry[1]() is not None]
        self._entries = [(key, weakref.ref(owner), values), *alive[: self.size - 1]]
        return values


def _row_pointers(sorted_index: Tensor, num_segments: int) -> Tensor:
    """``[N + 1]`` row pointers of a sorted ``[E]`` index in ``[0, N)``: ``ptr[n]`` = edges before node ``n``, by
    binary search (no host-device sync, unlike ``torch.bincount`` on CUDA, which reads the maximum back)."""
    nodes = torch.arange(num_segments + 1, dtype=sorted_index.dtype, device=sorted_index.device)
    return torch.searchsorted(sorted_index, nodes)


def segment_counts(index: Tensor, num_segments: int) -> Tensor:
    """``[N]`` long: how many entries of ``index`` (in ``[0, N)``) fall on each node; ``torch.bincount`` without
    its host-device sync on CUDA (the output size is known)."""
    counts = torch.zeros(num_segments, dtype=torch.long, device=index.device)
    return counts.index_add_(0, index, torch.ones_like(index))


def _check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise KernelError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
    if edge_index.dtype != torch.long:
        raise KernelError(f"edge_index must be torch.long, got {edge_index.dtype}")
    if num_nodes < 0:
        raise KernelError(f"num_nodes must be >= 0, got {num_nodes}")


def _is_sorted(index: Tensor) -> bool:
    return index.numel() < 2 or bool((index[1:] >= index[:-1]).all())


def _edge_slices(num_edges: int, width: int, device: torch.device, elements: int, minimum: int) -> list[slice]:
    """Consecutive edge ranges whose ``[chunk, width]`` temporaries hold about ``elements`` numbers (at least
    ``minimum`` edges each) on CPU, where cache-sized chunks pay; one range of all edges on other devices."""
    if device.type != "cpu":
        return [slice(0, num_edges)]
    size = max(minimum, elements // max(width, 1))
    return [slice(start, min(start + size, num_edges)) for start in range(0, num_edges, size)]


def sort_by_target(edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Sort edges by target (stable), as the ``"csr"`` layout needs.

    Args:
        edge_index: ``[2, E]`` long, row 0 = source, row 1 = target.

    Returns:
        ``(sorted_edge_index [2, E], perm [E])``; apply ``perm`` to every per-edge tensor
        (``edge_attr[perm]``, ``edge_shift[perm]``).
    """
    perm = torch.argsort(edge_index[1], stable=True)
    return edge_index[:, perm], perm


def build_csr(edge_index: Tensor, num_nodes: int, *, check: bool = True) -> CSRGraph:
    """The receiver-sorted view of a graph, for ``layout="csr"``.

    ``zoo.graph.neighbor_list`` returns edges sorted by (target, source, shift), so its ``edge_index`` can be
    used as is. Others: :func:`sort_by_target` first.

    Args:
        edge_index: ``[2, E]`` long, row 0 = source :math:`j`, row 1 = target :math:`i`, sorted by target.
        num_nodes: ``N``; every index must be in ``[0, N)``.
        check: verify that targets are sorted and indices in range (one device sync). Pass ``False`` only
            for edges known to be valid.

    Returns:
        A :class:`CSRGraph`.

    Raises:
        KernelError: wrong shape or dtype, an index out of range, or targets not sorted.
    """
    _check_edge_index(edge_index, num_nodes)
    source, target = edge_index[0], edge_index[1]
    if check and edge_index.numel() > 0:
        ordered = (target[1:] >= target[:-1]).all().to(edge_index.dtype)  # True for a single edge
        low, high, ordered = torch.stack([edge_index.min(), edge_index.max(), ordered]).tolist()
        if low < 0 or high >= num_nodes:
            raise KernelError(f"edge_index holds node {low if low < 0 else high}, outside [0, {num_nodes})")
        if not ordered:  # read with the range above: one host-device sync in all
            raise KernelError(
                "layout='csr' needs edges sorted by target (edge_index[1] nondecreasing); "
                "zoo.graph.neighbor_list returns them sorted, else use zoo.kernels.sort_by_target "
                "(and permute the per-edge tensors), or layout='atomic'"
            )
    targets = Segments(target, num_nodes, ptr=_row_pointers(target, num_nodes))
    if source.device.type == "cpu":
        sources = Segments(source, num_nodes)
    else:
        perm = torch.argsort(source, stable=True)
        sources = Segments(source, num_nodes, ptr=_row_pointers(source[perm], num_nodes), perm=perm)
    return CSRGraph(edge_index, num_nodes, targets, sources)


def _segment_sum_impl(src: Tensor, segments: Segments) -> Tensor:
    """``out[n] = sum of src[e] over edges e of segment n`` with no autograd; ``src [E, ...]``."""
    shape = (segments.num_segments, *src.shape[1:])
    if src.shape[0] == 0 or segments.num_segments == 0:
        return src.new_zeros(shape)
    if src.device.type == "cpu":
        flat = src.reshape(src.shape[0], -1)
        index = segments.index[:, None].expand_as(flat)
        out = flat.new_zeros(segments.num_segments, flat.shape[1]).scatter_add_(0, index, flat)
        return out.view(shape)
    if segments.ptr is not None:
        ordered = src if segments.perm is None else src.index_select(0, segments.perm)
        return torch.segment_reduce(ordered.contiguous(), "sum", offsets=segments.ptr, axis=0)
    return src.new_zeros(shape).index_add_(0, segments.index, src)


class _SegmentSum(torch.autograd.Function):
    """Differentiable segment sum; its gradient is :class:`_Gather` over the same segments (any order)."""

    @staticmethod
    def forward(ctx, src: Tensor, segments: Segments) -> Tensor:
        ctx.segments = segments
        return _segment_sum_impl(src, segments)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return _Gather.apply(grad, ctx.segments), None


class _Gather(torch.autograd.Function):
    """``x[index]`` whose gradient is a deterministic :class:`_SegmentSum` (any order of derivative)."""

    @staticmethod
    def forward(ctx, x: Tensor, segments: Segments) -> Tensor:
        ctx.segments = segments
        return x.index_select(0, segments.index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return _SegmentSum.apply(grad, ctx.segments), None


def _gather(x: Tensor, segments: Segments) -> Tensor:
    """``x[segments.index]``, ``[N, ...] -> [E, ...]``, with a segment-sum gradient over ``segments``."""
    return _Gather.apply(x, segments)


def _segment_sum(src: Tensor, segments: Segments) -> Tensor:
    """Differentiable segment sum of ``src [E, ...]`` over ``segments`` -> ``[N, ...]``."""
    return _SegmentSum.apply(src, segments)


def segment_sum(
    src: Tensor,
    index: Tensor,
    num_segments: int,
    *,
    reduce: str = "sum",
    layout: str = "csr",
    backend: str = "auto",
) -> Tensor:
    """Reduce per-edge rows into per-node rows: :math:`\\mathrm{out}_n = \\sum_{e:\\,\\mathrm{index}_e=n}
    \\mathrm{src}_e` (or the mean; empty segments give zeros).

    Args:
        src: ``[E, ...]`` float rows.
        index: ``[E]`` long segment of each row, in ``[0, num_segments)``; sorted for ``layout="csr"``.
        num_segments: ``N``, the number of output rows.
        reduce: ``"sum"`` or ``"mean"``.
        layout: ``"csr"`` (sorted index, deterministic; unsorted raises) or ``"atomic"`` (any order).
        backend: ``"auto"`` / ``"torch"`` (the implementations in this module's docstring) or
            ``"torch_scatter"`` (``segment_csr`` / ``scatter``; needs ``pip install zoo[scatter]``).

    Returns:
        ``[N, ...]`` tensor of ``src``'s dtype. Differentiable to any order with the ``"torch"`` backend.

    Raises:
        KernelError: an unknown reduce, layout or backend, mismatched shapes, or an unsorted index with
            ``layout="csr"``.
    """
    check_layout(layout)
    if reduce not in ("sum", "mean"):
        raise KernelError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise KernelError(f"index must have shape [{src.shape[0]}], got {list(index.shape)}")
    if backend not in ("auto", "torch", "torch_scatter"):
        raise KernelError(f"segment_sum backend must be 'auto', 'torch' or 'torch_scatter', got {backend!r}")
    if layout == "csr" and not _is_sorted(index):
        raise KernelError("layout='csr' needs a sorted index; sort it first or use layout='atomic'")
    if backend == "torch_scatter":
        torch_scatter = require_torch_scatter()
        if layout == "csr":
            ptr = _row_pointers(index, num_segments)
            return torch_scatter.segment_csr(src, ptr, reduce=reduce)
        return torch_scatter.scatter(src, index, dim=0, dim_size=num_segments, reduce=reduce)
    if layout == "csr":
        segments = Segments(index, num_segments, ptr=_row_pointers(index, num_segments))
    else:
        segments = Segments(index, num_segments)
    out = _segment_sum(src, segments)
    if reduce == "mean":
        count = segment_counts(index, num_segments).clamp_(min=1).to(src.dtype)
        out = out / count.view(-1, *([1] * (src.dim() - 1)))
    return out
