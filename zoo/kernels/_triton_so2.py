"""Triton kernels of :mod:`zoo.kernels.so2` (imported only for ``backend="triton"``).

- gather + rotation: one program per (block of ``BLOCK_E`` edges, tile of channels); for each edge its Wigner
  matrix ``[R, K]`` and the source node's coefficients ``[K, channels]`` (read straight from ``x``: no gathered
  copy) are loaded as two tiles and multiplied by one ``tl.dot``.
- rotation back + sum: one program per (target node, tile of channels), walking the node's edges in edge order
  (through the stable sorting permutation when the targets are not sorted), one ``tl.dot`` of the transposed
  matrix ``[K, R]`` with the message ``[R, channels]`` per edge accumulated in registers: no atomics, bitwise
  identical run to run.

float32 and bfloat16 accumulate in float32, float64 in float64; float32 products follow PyTorch's float32 matmul
precision, as ``torch.bmm`` (fairchem's rotation) does. Under ``TRITON_INTERPRET=1`` they run on CPU tensors in
Triton's interpreter (for tests); ``benchmarks/triton_compile.py`` compiles them for a GPU without one, and
``benchmarks/fairchem_models.py --backends torch triton`` times eSCN / EquiformerV2 on them against fairchem.
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
    PRECISION: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = tl.arange(0, BLOCK_R)
    ks = tl.arange(0, BLOCK_K)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_w = (rows < R)[:, None] & (ks < K)[None, :]
    mask_x = (ks < K)[:, None] & (cols < C)[None, :]
    mask_out = (rows < R)[:, None] & (cols < C)[None, :]
    for local in range(BLOCK_E):
        edge = (pid_e * BLOCK_E + local).to(tl.int64)  # int64 offsets: E * R * K exceeds 2**31 on big graphs
        if edge < E:
            node = tl.load(index_ptr + edge)
            w = tl.load(w_ptr + (edge * R + rows[:, None]) * K + ks[None, :], mask=mask_w, other=0.0)
            x = tl.load(x_ptr + (node * K + ks[:, None]) * C + cols[None, :], mask=mask_x, other=0.0)
            rotated = tl.dot(w.to(COMPUTE), x.to(COMPUTE), input_precision=PRECISION, out_dtype=COMPUTE)
            tl.store(out_ptr + (edge * R + rows[:, None]) * C + cols[None, :], rotated, mask=mask_out)


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
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    node = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    ks = tl.arange(0, BLOCK_K)
    rows = tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_w = (ks < K)[:, None] & (rows < R)[None, :]
    mask_m = (rows < R)[:, None] & (cols < C)[None, :]
    start = tl.load(ptr_ptr + node)
    stop = tl.load(ptr_ptr + node + 1)
    acc = tl.zeros([BLOCK_K, BLOCK_C], dtype=COMPUTE)
    for position in range(start, stop):
        if HAS_PERM:
            edge = tl.load(perm_ptr + position)
        else:
            edge = position  # int64: the loop runs over int64 row pointers
        w = tl.load(w_ptr + (edge * K + ks[:, None]) * R + rows[None, :], mask=mask_w, other=0.0)
        m = tl.load(m_ptr + (edge * R + rows[:, None]) * C + cols[None, :], mask=mask_m, other=0.0)
        acc = tl.dot(w.to(COMPUTE), m.to(COMPUTE), acc, input_precision=PRECISION, out_dtype=COMPUTE)
    offsets = (node * K + ks[:, None]) * C + cols[None, :]
    tl.store(out_ptr + offsets, acc, mask=(ks < K)[:, None] & (cols < C)[None, :])


def _compute(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype, str]:
    """(accumulation dtype, its Triton dtype, ``tl.dot`` input precision): float32 products follow PyTorch's
    float32 matmul precision as ``torch.bmm`` does on CUDA ("highest": exact float32, otherwise TF32)."""
    if dtype == torch.float64:
        return torch.float64, tl.float64, "ieee"
    return torch.float32, tl.float32, "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _block(size: int) -> int:
    """A ``tl.dot`` dimension: the next power of two, at least 16."""
    return max(16, triton.next_power_of_2(size))


def _warps(block_k: int, block_c: int) -> int:
    """8 warps for coefficient tiles of 64 x 64 and more (sm_90, float32: about 80 registers per thread for the
    gather instead of 212 with 4, benchmarks/triton_compile.py), else 4."""
    return 8 if block_k * block_c >= 64 * 64 else 4


def _block_c(channels: int) -> int:
    return min(64, max(16, triton.next_power_of_2(channels)))


def gather_rotate(x: Tensor, wigner: Tensor, index: Tensor) -> Tensor:
    """``[N, K, C]``, ``[E, R, K]``, ``[E]`` -> ``[E, R, C]`` (contiguous inputs)."""
    num_edges, rows, coefficients = wigner.shape
    channels = x.shape[2]
    accumulate, compute, precision = _compute(x.dtype)
    out = x.new_empty(num_edges, rows, channels, dtype=accumulate)
    if num_edges == 0 or channels == 0:
        return out.to(x.dtype)
    block_e, block_c = 4, _block_c(channels)
    grid = (triton.cdiv(num_edges, block_e), triton.cdiv(channels, block_c))
    launch(
        _gather_rotate_kernel, grid,
        x, wigner, index, out, num_edges, rows, coefficients, channels,
        COMPUTE=compute, PRECISION=precision, BLOCK_E=block_e,
        BLOCK_R=_block(rows), BLOCK_K=_block(coefficients), BLOCK_C=block_c,
        num_warps=_warps(_block(coefficients), block_c),
    )  # fmt: skip
    return out.to(x.dtype)


def rotate_back_sum(message: Tensor, wigner: Tensor, segments: Segments) -> Tensor:
    """``[E, R, C]``, ``[E, K, R]``, segments of the targets -> ``[N, K, C]`` (contiguous inputs)."""
    _, coefficients, rows = wigner.shape
    channels, num_nodes = message.shape[2], segments.num_segments
    accumulate, compute, precision = _compute(message.dtype)
    out = message.new_empty(num_nodes, coefficients, channels, dtype=accumulate)
    if num_nodes == 0 or channels == 0:
        return out.to(message.dtype)
    block_c = _block_c(channels)
    perm = segments.perm if segments.perm is not None else segments.ptr  # never read without a permutation
    launch(
        _rotate_back_sum_kernel, (num_nodes, triton.cdiv(channels, block_c)),
        message, wigner, segments.ptr, perm, out, coefficients, rows, channels,
        HAS_PERM=segments.perm is not None, COMPUTE=compute, PRECISION=precision,
        BLOCK_K=_block(coefficients), BLOCK_R=_block(rows), BLOCK_C=block_c,
        num_warps=_warps(_block(coefficients), block_c),
    )  # fmt: skip
    return out.to(message.dtype)
