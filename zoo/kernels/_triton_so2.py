"""Triton kernels of :mod:`zoo.kernels.so2` (imported only for ``backend="triton"``).

- gather + rotation: one program per (block of ``BLOCK_E`` edges, tile of channels); for each edge the rows
  of its Wigner matrix are applied to the source node's coefficients, read straight from ``x`` (no gathered
  copy), as a sum of ``K`` outer products in the accumulation dtype.
- rotation back + sum: one program per (target node, tile of channels), walking the node's edges in edge order
  (through the stable sorting permutation when the targets are not sorted) and accumulating in registers: no
  atomics, bitwise identical run to run.

float32 and bfloat16 accumulate in float32, float64 in float64. Under ``TRITON_INTERPRET=1`` they run on CPU
tensors in Triton's interpreter (for tests); speed is measured on a GPU (``benchmarks/so2_rotation.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from zoo.kernels._triton_launch import launch
from zoo.kernels.segment import Segments

__all__ = ["gather_rotate", "rotate_back_sum"]


@triton.jit
def _gather_rotate_kernel(
    x_ptr,
    w_ptr,
    index_ptr,
    out_ptr,
    E,
    R,
    K,
    C,
    COMPUTE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_rows = rows < R
    mask_cols = cols < C
    for local in range(BLOCK_E):
        edge = (pid_e * BLOCK_E + local).to(tl.int64)  # int64 offsets: E * R * K exceeds 2**31 on big graphs
        if edge < E:
            node = tl.load(index_ptr + edge)
            acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=COMPUTE)
            for k in range(K):
                w = tl.load(w_ptr + (edge * R + rows) * K + k, mask=mask_rows, other=0.0).to(COMPUTE)
                v = tl.load(x_ptr + (node * K + k) * C + cols, mask=mask_cols, other=0.0).to(COMPUTE)
                acc += w[:, None] * v[None, :]
            offsets = (edge * R + rows[:, None]) * C + cols[None, :]
            tl.store(out_ptr + offsets, acc, mask=mask_rows[:, None] & mask_cols[None, :])


@triton.jit
def _rotate_back_sum_kernel(
    m_ptr,
    w_ptr,
    ptr_ptr,
    perm_ptr,
    out_ptr,
    K,
    R,
    C,
    HAS_PERM: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    node = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    rows = tl.arange(0, BLOCK_K)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_rows = rows < K
    mask_cols = cols < C
    start = tl.load(ptr_ptr + node)
    stop = tl.load(ptr_ptr + node + 1)
    acc = tl.zeros([BLOCK_K, BLOCK_C], dtype=COMPUTE)
    for position in range(start, stop):
        if HAS_PERM:
            edge = tl.load(perm_ptr + position)
        else:
            edge = position  # int64: the loop runs over int64 row pointers
        for r in range(R):
            w = tl.load(w_ptr + (edge * K + rows) * R + r, mask=mask_rows, other=0.0).to(COMPUTE)
            v = tl.load(m_ptr + (edge * R + r) * C + cols, mask=mask_cols, other=0.0).to(COMPUTE)
            acc += w[:, None] * v[None, :]
    offsets = (node * K + rows[:, None]) * C + cols[None, :]
    tl.store(out_ptr + offsets, acc, mask=mask_rows[:, None] & mask_cols[None, :])


def _compute(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _block_c(channels: int) -> int:
    return min(64, max(16, triton.next_power_of_2(channels)))


def gather_rotate(x: Tensor, wigner: Tensor, index: Tensor) -> Tensor:
    """``[N, K, C]``, ``[E, R, K]``, ``[E]`` -> ``[E, R, C]`` (contiguous inputs)."""
    num_edges, rows, coefficients = wigner.shape
    channels = x.shape[2]
    accumulate, compute = _compute(x.dtype)
    out = x.new_empty(num_edges, rows, channels, dtype=accumulate)
    if num_edges == 0 or channels == 0:
        return out.to(x.dtype)
    block_e, block_c = 4, _block_c(channels)
    grid = (triton.cdiv(num_edges, block_e), triton.cdiv(channels, block_c))
    launch(
        _gather_rotate_kernel, grid,
        x, wigner, index, out, num_edges, rows, coefficients, channels,
        COMPUTE=compute, BLOCK_E=block_e, BLOCK_R=max(16, triton.next_power_of_2(rows)), BLOCK_C=block_c,
    )  # fmt: skip
    return out.to(x.dtype)


def rotate_back_sum(message: Tensor, wigner: Tensor, segments: Segments) -> Tensor:
    """``[E, R, C]``, ``[E, K, R]``, segments of the targets -> ``[N, K, C]`` (contiguous inputs)."""
    _, coefficients, rows = wigner.shape
    channels, num_nodes = message.shape[2], segments.num_segments
    accumulate, compute = _compute(message.dtype)
    out = message.new_empty(num_nodes, coefficients, channels, dtype=accumulate)
    if num_nodes == 0 or channels == 0:
        return out.to(message.dtype)
    block_c = _block_c(channels)
    perm = segments.perm if segments.perm is not None else segments.ptr  # never read without a permutation
    launch(
        _rotate_back_sum_kernel, (num_nodes, triton.cdiv(channels, block_c)),
        message, wigner, segments.ptr, perm, out, coefficients, rows, channels,
        HAS_PERM=segments.perm is not None, COMPUTE=compute,
        BLOCK_K=max(16, triton.next_power_of_2(coefficients)), BLOCK_C=block_c,
    )  # fmt: skip
    return out.to(message.dtype)
