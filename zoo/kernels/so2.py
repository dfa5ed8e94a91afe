"""Fused edge rotations for the SO(2) convolutions of eSCN and EquiformerV2.

Those models rotate the coefficients of both ends of each edge into the edge's frame (keeping only the orders
:math:`|m| \\le m_{max}`), convolve there, rotate the result back and sum it at the target:

.. math::

    y_e = D_e\\, x_{s(e)} \\quad (\\text{gather + rotation + m-truncation}), \\qquad
    \\mathrm{out}_i = \\sum_{e:\\, t(e) = i} D'_e\\, y'_e \\quad (\\text{inverse rotation + scatter}),

with :math:`D_e` ``[R, K]`` the rows of the Wigner matrix of edge :math:`e` that survive the truncation and
:math:`D'_e` ``[K, R]`` the rotation back. Done literally (``x[source]`` then ``bmm``; ``bmm`` then
``index_add_``) each step holds an ``[E, K, C]`` tensor, the largest of the layer; :func:`gather_rotate` and
:func:`rotate_back_sum` never form it. Each is the other's gradient (with the matrices transposed), so both
have derivatives of any order.

Backends: ``"torch"`` (edges in cache-sized chunks on CPU, one ``bmm`` per chunk; the sums in a fixed order,
so results are bitwise reproducible) and ``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1`` for tests: one
program per edge for the gather, one per target node walking its edges in order for the sum, so deterministic
too); ``"auto"`` picks Triton for CUDA tensors when it is installed.

Example:
    >>> import torch
    >>> from zoo.kernels import gather_rotate, rotate_back_sum
    >>> x, wigner = torch.randn(4, 9, 8), torch.randn(5, 7, 9)  # K = 9 coefficients, R = 7 kept, C = 8
    >>> index = torch.tensor([0, 2, 2, 3, 1])
    >>> torch.allclose(gather_rotate(x, wigner, index), wigner @ x[index], atol=1e-5)
    True
    >>> back = torch.randn(5, 9, 7)
    >>> out = rotate_back_sum(wigner @ x[index], back, index, 4)
    >>> torch.allclose(out, torch.zeros(4, 9, 8).index_add_(0, index, back @ wigner @ x[index]), atol=1e-4)
    True
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from zoo.kernels.backends import KernelError, require_triton
from zoo.kernels.segment import (
    Segments,
    TensorMemo,
    _edge_slices,
    _is_sorted,
    _row_pointers,
    _segment_sum_impl,
)

__all__ = ["SO2_BACKENDS", "check_so2_backend", "gather_rotate", "rotate_back_sum"]

SO2_BACKENDS = ("auto", "torch", "triton")
# On CPU the "torch" backend works on chunks of edges whose [chunk, K, C] products hold about this many numbers.
CPU_CHUNK_ELEMENTS = 2**20


def check_so2_backend(backend: str | None) -> None:
    """Raise :class:`KernelError` unless ``backend`` is ``None`` (a model's own code) or in :data:`SO2_BACKENDS`."""
    if backend is not None and backend not in SO2_BACKENDS:
        raise KernelError(
            f"the SO(2) rotation kernels take backend in {SO2_BACKENDS} (or None for the model's own code), got "
            f"{backend!r}"
        )


def resolve_so2_backend(backend: str, device: torch.device) -> str:
    """The backend that runs for ``backend`` on ``device``.

    Raises:
        KernelError: an unknown name, or Triton where it cannot run.
    """
    if backend not in SO2_BACKENDS:
        raise KernelError(f"the SO(2) rotation kernels take backend in {SO2_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and importlib.util.find_spec("triton") is not None else "torch"
    if backend == "triton":
        require_triton(device)
    return backend


def _segments(index: Tensor, num_nodes: int) -> Segments:
    """The edges of each node in edge order: row pointers, with a stable sorting permutation unless sorted."""
    if _is_sorted(index):
        return Segments(index, num_nodes, ptr=_row_pointers(index, num_nodes))
    perm = torch.argsort(index, stable=True)
    return Segments(index, num_nodes, ptr=_row_pointers(index[perm], num_nodes), perm=perm)


# The checked index rows and their segments, once per edge_index row for the layers of a forward pass.
_INDEX_MEMO = TensorMemo(4)


def _index_entry(index: Tensor, num_edges: int, num_nodes: int) -> dict:
    """The memo values of ``index``, checked to be ``[E]`` long in ``[0, num_nodes)`` when first seen.

    Raises:
        KernelError: another shape or dtype, or a node outside ``[0, num_nodes)``.
    """
    if index.dim() != 1 or index.dtype != torch.long or index.shape[0] != num_edges:
        raise KernelError(f"index must be [E] = [{num_edges}] torch.long, got {index.dtype} {list(index.shape)}")
    values = _INDEX_MEMO.lookup(index, num_nodes)
    if values is None:
        if num_edges and any(bound < 0 or bound >= num_nodes for bound in torch.stack(torch.aminmax(index)).tolist()):
            raise KernelError(f"index holds nodes outside [0, {num_nodes})")
        values = _INDEX_MEMO.store(index, num_nodes)
    return values


def _cached_segments(index: Tensor, num_edges: int, num_nodes: int) -> Segments:
    """:func:`_segments` of ``index`` checked by :func:`_index_entry`; row pointers and sorting permutation built
    once for the index tensors last seen."""
    values = _index_entry(index, num_edges, num_nodes)
    if "ptr" not in values:
        segments = _segments(index, num_nodes)
        values.update(ptr=segments.ptr, perm=segments.perm)
    return Segments(index, num_nodes, ptr=values["ptr"], perm=values["perm"])


def _chunks(num_edges: int, width: int, device: torch.device) -> list[slice]:
    return _edge_slices(num_edges, width, device, CPU_CHUNK_ELEMENTS, minimum=16)


# --- "torch" engine ----------------------------------------------------------------------------------------------


def _torch_gather_rotate(x: Tensor, wigner: Tensor, index: Tensor) -> Tensor:
    out = x.new_empty(wigner.shape[0], wigner.shape[1], x.shape[2])
    for edges in _chunks(index.shape[0], wigner.shape[2] * x.shape[2], x.device):
        torch.bmm(wigner[edges], x.index_select(0, index[edges]), out=out[edges])
    return out


def _torch_rotate_back_sum(message: Tensor, wigner: Tensor, segments: Segments) -> Tensor:
    num_nodes, width = segments.num_segments, wigner.shape[1] * message.shape[2]
    if message.device.type != "cpu":  # one chunk, reduced by the segments (segment_reduce: deterministic)
        values = torch.bmm(wigner, message).reshape(-1, width)
        return _segment_sum_impl(values, segments).view(num_nodes, wigner.shape[1], message.shape[2])
    out = message.new_zeros(num_nodes, width)
    for edges in _chunks(message.shape[0], width, message.device):
        values = torch.bmm(wigner[edges], message[edges]).reshape(-1, width)
        out.scatter_add_(0, segments.index[edges, None].expand_as(values), values)  # CPU: in edge order
    return out.view(num_nodes, wigner.shape[1], message.shape[2])


# --- autograd ----------------------------------------------------------------------------------------------------


def _run_gather_rotate(x: Tensor, wigner: Tensor, index: Tensor, backend: str) -> Tensor:
    if backend == "triton":
        from zoo.kernels import _triton_so2

        return _triton_so2.gather_rotate(x.contiguous(), wigner.contiguous(), index.contiguous())
    return _torch_gather_rotate(x, wigner, index)


def _run_rotate_back_sum(message: Tensor, wigner: Tensor, segments: Segments, backend: str) -> Tensor:
    if backend == "triton":
        from zoo.kernels import _triton_so2

        return _triton_so2.rotate_back_sum(message.contiguous(), wigner.contiguous(), segments)
    return _torch_rotate_back_sum(message, wigner, segments)


class _GatherRotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wigner, index, segments, backend):
        ctx.save_for_backward(x, wigner, index)
        ctx.segments, ctx.backend = segments, backend
        return _run_gather_rotate(x, wigner, index, backend)

    @staticmethod
    def backward(ctx, grad):
        x, wigner, index = ctx.saved_tensors
        grad_x = grad_wigner = None
        if ctx.needs_input_grad[0]:
            segments = ctx.segments if ctx.segments is not None else _cached_segments(index, index.shape[0], x.shape[0])
            grad_x = _RotateBackSum.apply(grad, wigner.transpose(1, 2), index, segments, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_wigner = grad @ x[index].transpose(1, 2)
        return grad_x, grad_wigner, None, None, None


class _RotateBackSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, message, wigner, index, segments, backend):
        ctx.save_for_backward(message, wigner, index)
        ctx.segments, ctx.backend = segments, backend
        return _run_rotate_back_sum(message, wigner, segments, backend)

    @staticmethod
    def backward(ctx, grad):
        message, wigner, index = ctx.saved_tensors
        grad_message = grad_wigner = None
        if ctx.needs_input_grad[0]:
            grad_message = _GatherRotate.apply(grad, wigner.transpose(1, 2), index, ctx.segments, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_wigner = grad[index] @ message.transpose(1, 2)
        return grad_message, grad_wigner, None, None, None


def _check(name: str, tensor: Tensor, dims: int, like: Tensor | None = None) -> None:
    if tensor.dim() != dims or not tensor.is_floating_point():
        raise KernelError(
            f"{name} must be a float tensor with {dims} dimensions, got {tensor.dtype} {list(tensor.shape)}"
        )
    if like is not None and (tensor.dtype != like.dtype or tensor.device != like.device):
        raise KernelError(
            f"{name} must have the dtype and device of the features ({like.dtype}, {like.device}), got "
            f"{tensor.dtype} on {tensor.device}"
        )


def gather_rotate(x: Tensor, wigner: Tensor, index: Tensor, *, backend: str = "auto") -> Tensor:
    """``out[e] = wigner[e] @ x[index[e]]``: the coefficients of one end of every edge in the edge's frame.

    Args:
        x: ``[N, K, C]`` node coefficients.
        wigner: ``[E, R, K]`` per-edge rotation into the edge frame, rows already truncated to
            :math:`|m| \\le m_{max}` (:attr:`zoo.nn.so3.EdgeRotation.wigner_in`).
        index: ``[E]`` long node of each edge (its source or its target).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[E, R, C]``; differentiable in ``x`` and ``wigner`` to any order.

    Raises:
        KernelError: mismatched shapes, dtypes or devices, an index out of range, or an unknown backend.
    """
    _check("x", x, 3)
    _check("wigner", wigner, 3, like=x)
    if wigner.shape[2] != x.shape[1]:
        raise KernelError(f"wigner [E, R, K] must have K = {x.shape[1]} columns (x's), got {list(wigner.shape)}")
    _index_entry(index, wigner.shape[0], x.shape[0])  # checked once; segments only if a backward pass needs them
    backend = resolve_so2_backend(backend, x.device)
    return _GatherRotate.apply(x, wigner, index, None, backend)


def rotate_back_sum(message: Tensor, wigner: Tensor, index: Tensor, num_nodes: int, *, backend: str = "auto") -> Tensor:
    """``out[i] = sum over edges e with index[e] = i of wigner[e] @ message[e]``: the messages rotated back
    from the edge frames and summed at their targets, without an ``[E, K, C]`` tensor.

    Args:
        message: ``[E, R, C]`` per-edge coefficients in the edge frames.
        wigner: ``[E, K, R]`` per-edge rotation back (:attr:`zoo.nn.so3.EdgeRotation.wigner_out`).
        index: ``[E]`` long target of each edge (any order; sorted targets skip a sort).
        num_nodes: ``N``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[N, K, C]``, summed in edge order (bitwise reproducible); differentiable to any order.

    Raises:
        KernelError: mismatched shapes, dtypes or devices, an index out of range, or an unknown backend.
    """
    _check("message", message, 3)
    _check("wigner", wigner, 3, like=message)
    if wigner.shape[0] != message.shape[0] or wigner.shape[2] != message.shape[1]:
        raise KernelError(
            f"wigner must be [E, K, R] with E = {message.shape[0]} and R = {message.shape[1]} (message's), got "
            f"{list(wigner.shape)}"
        )
    segments = _cached_segments(index, message.shape[0], num_nodes)
    backend = resolve_so2_backend(backend, message.device)
    return _RotateBackSum.apply(message, wigner, index, segments, backend)
