"""Triton forward kernels of :func:`zoo.kernels.message_aggregate` (imported only for ``backend="triton"``).

Each kernel fuses, per block of edges: the gathers :math:`P_i + Q_j`, the edge term :math:`e_{ij} W_e^\\top`, the
activation, the second Linear (``tl.dot``) and its activation, EGNN's attention gate
:math:`\\sigma(m_{ij} \\cdot w_g + b_g)` and per-edge weights when given, and the reduction:

- CSR, ``reduction="segment"`` (the default): each program takes ``block_n`` consecutive target rows (one for
  one-layer messages, 16 for two-layer ones, which share the program's tile of ``W_2``) and a tile of output
  columns. For each row it loads the projection :math:`P_i` once, walks the row's contiguous edges
  (receiver-sorted) ``BLOCK_E`` at a time into a ``[BLOCK_E, width]`` accumulator and sums that once at the end
  (``tl.sum``): plain float32 (float64) additions in a fixed order, no atomics, bitwise identical run to run.
- CSR, ``reduction="onehot"``: one program per block of ``BLOCK_N`` consecutive targets. Each block of edges is
  reduced into the block's rows by a product with the one-hot ``[BLOCK_N, BLOCK_E]`` membership matrix, in edge
  order, also bitwise repeatable. The one-hot product runs in full precision (float32: "tf32x3" on tensor cores,
  or "ieee" with ``exact_sums``; float64: "ieee"); every edge gathers its target's row of ``P``.
- atomic: one program per block of edges, ``tl.atomic_add`` into a float32 (float64) accumulator.

The second Linear follows PyTorch's float32 matmul precision (``torch.get_float32_matmul_precision()``:
"highest" -> exact float32 products, otherwise TF32), as ``torch.nn.functional.linear`` does on CUDA.
The backward pass reuses the PyTorch engine (:mod:`zoo.kernels.message`), so gradients of any order work.
Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors in Triton's interpreter (for tests).

Measured on an H100 in session 1 (benchmarks/README.md), before the segment reduction existed: the one-layer
one-hot CSR and atomic kernels ran 2-3.5x faster than the ``"torch"`` backend's forward but reached only 11-27 %
of copy bandwidth; the two-layer kernel was far slower than cuBLAS in exact float32, which is why
``backend="auto"`` uses Triton for one-layer MLPs only. ``benchmarks/triton_sweep.py`` compares the reductions
and tiles on the GPU at hand; ``benchmarks/triton_compile.py`` compiles every kernel for a CUDA architecture
without a GPU (registers, spills, vector loads).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from zoo.kernels._triton_launch import launch
from zoo.kernels.backends import KernelError
from zoo.kernels.message import _EAGER, Grads, Inputs, _Plan

__all__ = ["ENGINE", "REDUCTIONS", "LaunchConfig", "Tiles", "launch_config", "resolve_config"]

_ACT_CODES = {"silu": 0, "relu": 1}
# Edge features up to this width are applied by an unrolled loop of outer products; wider ones by tl.dot.
_EDGE_LOOP_MAX = 16
#: CSR reductions (LaunchConfig.reduction).
REDUCTIONS = ("segment", "onehot")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and launch options of the forward kernels; ``None`` keeps the size-based default.

    Attributes:
        reduction: CSR: ``"segment"`` (one program per target row, default) or ``"onehot"`` (blocks of
            ``block_n`` rows reduced by a one-hot product).
        block_n: CSR: target rows per program, a power of two. One-hot: rows reduced together (>= 16, default
            16). Segment: rows walked one after another by a program, sharing its tile of ``W_2`` (default 1
            for one-layer messages, 16 for two-layer ones).
        block_e: edges per step of the edge loop (default 32).
        block_o: output columns per program (default: the padded width, at most 128 for one-layer messages).
        num_warps: warps per program (default 8 for tiles of >= 128 x 64 elements, else 4).
        num_stages: software-pipelining depth of the CSR edge loop (default 1: no pipelining).
        exact_sums: CSR one-hot, float32: reduce with exact float32 products ("ieee", CUDA cores) instead of the
            default "tf32x3" on tensor cores (float64 always uses "ieee"; the segment reduction always adds exactly).

    Tile sizes are powers of two >= 16 (``tl.dot`` operands). ``block_e`` fixes the order of the CSR sums:
    results stay bitwise identical run to run for one configuration, not across configurations.
    """

    reduction: str | None = None
    block_n: int | None = None
    block_e: int | None = None
    block_o: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    exact_sums: bool | None = None

    def __post_init__(self) -> None:
        if self.reduction is not None and self.reduction not in REDUCTIONS:
            raise KernelError(f"LaunchConfig.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        for name in ("block_e", "block_o"):
            value = getattr(self, name)
            if value is not None and (value < 16 or value & (value - 1)):
                raise KernelError(f"LaunchConfig.{name} must be a power of two >= 16, got {value}")
        if self.block_n is not None and (self.block_n < 1 or self.block_n & (self.block_n - 1)):
            raise KernelError(f"LaunchConfig.block_n must be a power of two, got {self.block_n}")
        if self.reduction == "onehot" and self.block_n is not None and self.block_n < 16:
            raise KernelError(
                f"LaunchConfig.block_n must be >= 16 with reduction='onehot' (tl.dot), got {self.block_n}"
            )
        if self.num_warps is not None and self.num_warps not in (1, 2, 4, 8, 16, 32):
            raise KernelError(f"LaunchConfig.num_warps must be a power of two up to 32, got {self.num_warps}")
        if self.num_stages is not None and not 1 <= self.num_stages <= 8:
            raise KernelError(f"LaunchConfig.num_stages must be 1..8, got {self.num_stages}")


_CONFIG = LaunchConfig()


@contextlib.contextmanager
def launch_config(config: LaunchConfig) -> Iterator[LaunchConfig]:
    """Run the Triton forward kernels with ``config`` inside the ``with`` block (for tuning sweeps:
    ``benchmarks/triton_sweep.py``); the previous configuration is restored on exit."""
    global _CONFIG
    previous, _CONFIG = _CONFIG, config
    try:
        yield config
    finally:
        _CONFIG = previous


@dataclasses.dataclass(frozen=True)
class Tiles:
    """A :class:`LaunchConfig` resolved for one call (every field set; ``block_h``: padded hidden width)."""

    reduction: str
    block_h: int
    block_o: int
    block_e: int
    block_n: int
    num_warps: int
    num_stages: int
    exact_sums: bool


def resolve_config(
    config: LaunchConfig, hidden: int, width: int, *, two_layer: bool, element_size: int = 4, gated: bool = False
) -> Tiles:
    """The tiles a call with ``hidden`` features and ``width`` output columns runs with under ``config``.

    Two-layer messages hold a ``[block_h, block_o]`` tile of ``W_2`` (``element_size`` bytes per element): by
    default at most 64 KiB, so that with the kernel's other buffers it stays within the 99 KiB of shared memory
    a program may have on every CUDA GPU since Ampere (benchmarks/triton_compile.py reports the figures).
    A ``gated`` message (EGNN's attention) needs the whole message row in one program: ``block_o`` is the padded
    width (for two-layer float64 messages wider than 64 that exceeds the 64 KiB, which sm_80 and sm_90 hold).

    Raises:
        KernelError: ``config.block_o`` narrower than a gated message.
    """
    block_h = max(16, triton.next_power_of_2(hidden))
    if two_layer:
        block_o = min(max(16, triton.next_power_of_2(width)), max(16, 65536 // (block_h * element_size)))
    else:
        block_o = min(block_h, 128)
    block_o = config.block_o or block_o
    if gated:
        full = max(16, triton.next_power_of_2(width))
        if config.block_o is not None and config.block_o < full:
            raise KernelError(f"a gated message needs all its {width} columns in one program: block_o >= {full}")
        block_o = full
    if not two_layer:
        block_h = block_o  # one-layer: the hidden columns are the output columns
    reduction = config.reduction or "segment"
    block_n = config.block_n or (1 if reduction == "segment" and not two_layer else 16)
    return Tiles(
        reduction=reduction,
        block_h=block_h,
        block_o=block_o,
        block_e=config.block_e or 32,
        block_n=block_n,
        num_warps=config.num_warps or (8 if block_h * block_o >= 128 * 64 else 4),
        num_stages=config.num_stages or 1,
        exact_sums=bool(config.exact_sums),
    )


@triton.jit
def _activation(x, ACT: tl.constexpr):
    if ACT == 0:
        return x * tl.sigmoid(x)
    else:
        return tl.maximum(x, 0.0)


@triton.jit
def _second_layer(
    w2_ptr, b2_ptr, out_cols, mask_out_cols, stride_w2, H,
    TWO_LAYER: tl.constexpr, HAS_B2: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """``(hidden columns, their mask, W_2 tile [BLOCK_H, BLOCK_O], b_2)`` of a program's tile of output columns;
    one-layer messages: the output columns are the hidden columns, no W_2 or b_2."""
    if TWO_LAYER:
        cols = tl.arange(0, BLOCK_H)
        mask_cols = cols < H
        w2 = tl.load(
            w2_ptr + out_cols[None, :] * stride_w2 + cols[:, None],
            mask=mask_cols[:, None] & mask_out_cols[None, :],
            other=0.0,
        )
        if HAS_B2:
            b2 = tl.load(b2_ptr + out_cols, mask=mask_out_cols, other=0.0).to(COMPUTE)
        else:
            b2 = mask_out_cols  # placeholder, never read (a compiled jit function cannot return None)
    else:
        cols = out_cols
        mask_cols = mask_out_cols
        w2 = mask_out_cols  # placeholders, never read
        b2 = mask_out_cols
    return cols, mask_cols, w2, b2


@triton.jit
def _target_rows(p_ptr, target, mask_e, cols, mask_cols, stride_p, COMPUTE: tl.constexpr):
    """The target projections ``P_i`` of a block of edges, ``[BLOCK_E, width]``."""
    mask = mask_e[:, None] & mask_cols[None, :]
    return tl.load(p_ptr + target[:, None] * stride_p + cols[None, :], mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def _messages(
    pre,
    q_ptr,
    e_ptr,
    we_ptr,
    w2,
    b2,
    source,
    offs_e,
    mask_e,
    cols,
    mask_cols,
    stride_q,
    stride_e,
    stride_we,
    D,
    EDGE_MODE: tl.constexpr,
    D_LOOP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_LAYER: tl.constexpr,
    HAS_B2: tl.constexpr,
    ACT: tl.constexpr,
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """Messages ``[BLOCK_E, width]`` of a block of edges (``width``: BLOCK_O columns, or BLOCK_H one-layer) from
    ``pre``, the target projections ``P_i`` (``[BLOCK_E, width]``, or one row ``[1, width]`` shared by the block)."""
    mask = mask_e[:, None] & mask_cols[None, :]
    pre = pre + tl.load(q_ptr + source[:, None] * stride_q + cols[None, :], mask=mask, other=0.0).to(COMPUTE)
    if EDGE_MODE == 1:
        for d in tl.static_range(D_LOOP):
            e_d = tl.load(e_ptr + offs_e * stride_e + d, mask=mask_e, other=0.0).to(COMPUTE)
            w_d = tl.load(we_ptr + cols * stride_we + d, mask=mask_cols, other=0.0).to(COMPUTE)
            pre += e_d[:, None] * w_d[None, :]
    elif EDGE_MODE == 2:
        offs_d = tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        e = tl.load(e_ptr + offs_e[:, None] * stride_e + offs_d[None, :], mask=mask_e[:, None] & mask_d[None, :])
        we = tl.load(we_ptr + cols[None, :] * stride_we + offs_d[:, None], mask=mask_cols[None, :] & mask_d[:, None])
        pre += tl.dot(e, we, input_precision=PRECISION, out_dtype=COMPUTE)
    hidden = _activation(pre, ACT)
    if TWO_LAYER:
        z = tl.dot(hidden.to(w2.dtype), w2, input_precision=PRECISION, out_dtype=COMPUTE)
        if HAS_B2:
            z += b2[None, :]
        hidden = _activation(z, ACT)
    return hidden


@triton.jit
def _gate_weights(
    wg_ptr, bg_ptr, out_cols, mask_out_cols, HAS_GATE: tl.constexpr, HAS_BG: tl.constexpr, COMPUTE: tl.constexpr
):
    """``(w_g, b_g)`` of EGNN's attention gate :math:`\\sigma(m \\cdot w_g + b_g)` (the program holds every output
    column when gated); placeholders, never read, otherwise."""
    if HAS_GATE:
        w_gate = tl.load(wg_ptr + out_cols, mask=mask_out_cols, other=0.0).to(COMPUTE)
    else:
        w_gate = mask_out_cols
    if HAS_BG:
        b_gate = tl.load(bg_ptr).to(COMPUTE)
    else:
        b_gate = 0.0
    return w_gate, b_gate


@triton.jit
def _scaled(
    message,
    w_gate,
    b_gate,
    ew_ptr,
    offs_e,
    mask_e,
    HAS_GATE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """``message [BLOCK_E, width]`` times the gate :math:`\\sigma(m \\cdot w_g + b_g)` and the edge weights, when
    the call has them."""
    if HAS_GATE:
        gate = tl.sigmoid(tl.sum(message * w_gate[None, :], axis=1) + b_gate)
        message = message * gate[:, None]
    if HAS_WEIGHT:
        weight = tl.load(ew_ptr + offs_e, mask=mask_e, other=0.0).to(COMPUTE)
        message = message * weight[:, None]
    return message


@triton.jit
def _csr_forward_kernel(
    p_ptr,
    q_ptr,
    e_ptr,
    we_ptr,
    w2_ptr,
    b2_ptr,
    wg_ptr,
    bg_ptr,
    ew_ptr,
    ptr_ptr,
    source_ptr,
    target_ptr,
    out_ptr,
    N,
    H,
    H2,
    D,
    stride_p,
    stride_q,
    stride_e,
    stride_we,
    stride_w2,
    stride_out,
    EDGE_MODE: tl.constexpr,
    D_LOOP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_LAYER: tl.constexpr,
    HAS_B2: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_BG: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ACT: tl.constexpr,
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
    SUM_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_O: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_o = tl.program_id(1)
    row0 = pid_n * BLOCK_N
    rows = row0 + tl.arange(0, BLOCK_N)
    edge_start = tl.load(ptr_ptr + row0)
    edge_stop = tl.load(ptr_ptr + tl.minimum(row0 + BLOCK_N, N))
    out_cols = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_out_cols = out_cols < H2
    cols, mask_cols, w2, b2 = _second_layer(
        w2_ptr, b2_ptr, out_cols, mask_out_cols, stride_w2, H, TWO_LAYER, HAS_B2, COMPUTE, BLOCK_H
    )
    w_gate, b_gate = _gate_weights(wg_ptr, bg_ptr, out_cols, mask_out_cols, HAS_GATE, HAS_BG, COMPUTE)
    acc = tl.zeros([BLOCK_N, BLOCK_O], dtype=COMPUTE)
    for start in tl.range(edge_start, edge_stop, BLOCK_E, num_stages=NUM_STAGES):
        offs_e = start + tl.arange(0, BLOCK_E)
        mask_e = offs_e < edge_stop
        target = tl.load(target_ptr + offs_e, mask=mask_e, other=-1)
        source = tl.load(source_ptr + offs_e, mask=mask_e, other=0)
        message = _messages(
            _target_rows(p_ptr, target, mask_e, cols, mask_cols, stride_p, COMPUTE),
            q_ptr, e_ptr, we_ptr, w2, b2, source, offs_e, mask_e, cols, mask_cols, stride_q, stride_e, stride_we, D,
            EDGE_MODE, D_LOOP, BLOCK_D, TWO_LAYER, HAS_B2, ACT, PRECISION, COMPUTE,
        )  # fmt: skip
        message = _scaled(message, w_gate, b_gate, ew_ptr, offs_e, mask_e, HAS_GATE, HAS_WEIGHT, COMPUTE)
        one_hot = (target[None, :] == rows[:, None]).to(COMPUTE)
        acc += tl.dot(one_hot, message, input_precision=SUM_PRECISION, out_dtype=COMPUTE)
    mask = (rows < N)[:, None] & mask_out_cols[None, :]
    tl.store(out_ptr + rows[:, None] * stride_out + out_cols[None, :], acc, mask=mask)


@triton.jit
def _csr_segment_kernel(
    p_ptr,
    q_ptr,
    e_ptr,
    we_ptr,
    w2_ptr,
    b2_ptr,
    wg_ptr,
    bg_ptr,
    ew_ptr,
    ptr_ptr,
    source_ptr,
    out_ptr,
    N,
    H,
    H2,
    D,
    stride_p,
    stride_q,
    stride_e,
    stride_we,
    stride_w2,
    stride_out,
    EDGE_MODE: tl.constexpr,
    D_LOOP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_LAYER: tl.constexpr,
    HAS_B2: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_BG: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ACT: tl.constexpr,
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_O: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    ROWS: tl.constexpr,
):
    pid_o = tl.program_id(1)
    out_cols = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_out_cols = out_cols < H2
    cols, mask_cols, w2, b2 = _second_layer(
        w2_ptr, b2_ptr, out_cols, mask_out_cols, stride_w2, H, TWO_LAYER, HAS_B2, COMPUTE, BLOCK_H
    )
    w_gate, b_gate = _gate_weights(wg_ptr, bg_ptr, out_cols, mask_out_cols, HAS_GATE, HAS_BG, COMPUTE)
    for local in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + local
        if row < N:
            edge_start = tl.load(ptr_ptr + row)
            edge_stop = tl.load(ptr_ptr + row + 1)
            p_row = tl.load(p_ptr + row * stride_p + cols, mask=mask_cols, other=0.0).to(COMPUTE)
            acc = tl.zeros([BLOCK_E, BLOCK_O], dtype=COMPUTE)
            for start in tl.range(edge_start, edge_stop, BLOCK_E, num_stages=NUM_STAGES):
                offs_e = start + tl.arange(0, BLOCK_E)
                mask_e = offs_e < edge_stop
                source = tl.load(source_ptr + offs_e, mask=mask_e, other=0)
                message = _messages(
                    p_row[None, :], q_ptr, e_ptr, we_ptr, w2, b2, source, offs_e, mask_e, cols, mask_cols,
                    stride_q, stride_e, stride_we, D,
                    EDGE_MODE, D_LOOP, BLOCK_D, TWO_LAYER, HAS_B2, ACT, PRECISION, COMPUTE,
                )  # fmt: skip
                message = _scaled(message, w_gate, b_gate, ew_ptr, offs_e, mask_e, HAS_GATE, HAS_WEIGHT, COMPUTE)
                acc += tl.where(mask_e[:, None], message, 0.0)
            tl.store(out_ptr + row * stride_out + out_cols, tl.sum(acc, axis=0), mask=mask_out_cols)


@triton.jit
def _atomic_forward_kernel(
    p_ptr,
    q_ptr,
    e_ptr,
    we_ptr,
    w2_ptr,
    b2_ptr,
    wg_ptr,
    bg_ptr,
    ew_ptr,
    source_ptr,
    target_ptr,
    out_ptr,
    E,
    H,
    H2,
    D,
    stride_p,
    stride_q,
    stride_e,
    stride_we,
    stride_w2,
    stride_out,
    EDGE_MODE: tl.constexpr,
    D_LOOP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_LAYER: tl.constexpr,
    HAS_B2: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_BG: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ACT: tl.constexpr,
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_o = tl.program_id(1)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    out_cols = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_out_cols = out_cols < H2
    cols, mask_cols, w2, b2 = _second_layer(
        w2_ptr, b2_ptr, out_cols, mask_out_cols, stride_w2, H, TWO_LAYER, HAS_B2, COMPUTE, BLOCK_H
    )
    w_gate, b_gate = _gate_weights(wg_ptr, bg_ptr, out_cols, mask_out_cols, HAS_GATE, HAS_BG, COMPUTE)
    target = tl.load(target_ptr + offs_e, mask=mask_e, other=0)
    source = tl.load(source_ptr + offs_e, mask=mask_e, other=0)
    message = _messages(
        _target_rows(p_ptr, target, mask_e, cols, mask_cols, stride_p, COMPUTE),
        q_ptr, e_ptr, we_ptr, w2, b2, source, offs_e, mask_e, cols, mask_cols, stride_q, stride_e, stride_we, D,
        EDGE_MODE, D_LOOP, BLOCK_D, TWO_LAYER, HAS_B2, ACT, PRECISION, COMPUTE,
    )  # fmt: skip
    message = _scaled(message, w_gate, b_gate, ew_ptr, offs_e, mask_e, HAS_GATE, HAS_WEIGHT, COMPUTE)
    mask = mask_e[:, None] & mask_out_cols[None, :]
    ptrs = out_ptr + target[:, None] * stride_out + out_cols[None, :]
    tl.atomic_add(ptrs, message.to(out_ptr.dtype.element_ty), mask=mask)


def _precision(dtype: torch.dtype) -> tuple[str, str]:
    """(precision of the second Linear, precision of the one-hot reduction) for ``tl.dot``."""
    if dtype == torch.float64:
        return "ieee", "ieee"
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32", "tf32x3"
    return "ieee", "tf32x3"


class _TritonEngine:
    """Triton forward, PyTorch backward (:data:`zoo.kernels.message._EAGER`)."""

    def forward(self, inputs: Inputs, plan: _Plan, act: str) -> Tensor:
        p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = (
            None if t is None else t.contiguous() for t in inputs
        )
        num_nodes, hidden = p.shape
        width = hidden if w2 is None else w2.shape[0]
        accumulate = torch.float64 if p.dtype == torch.float64 else torch.float32
        if plan.num_edges == 0 or num_nodes == 0:
            return p.new_zeros(num_nodes, width)
        edge_dim = 0 if edge_attr is None else edge_attr.shape[1]
        edge_mode = 0 if edge_dim == 0 else (1 if edge_dim <= _EDGE_LOOP_MAX else 2)
        tiles = resolve_config(
            _CONFIG, hidden, width, two_layer=w2 is not None, element_size=p.element_size(), gated=w_gate is not None
        )
        block_h, block_o = tiles.block_h, tiles.block_o
        precision, sum_precision = _precision(p.dtype)
        if tiles.exact_sums:
            sum_precision = "ieee"
        dummy = p  # never read: pointer arguments of disabled features
        common = dict(
            EDGE_MODE=edge_mode,
            D_LOOP=edge_dim if edge_mode == 1 else 0,
            BLOCK_D=max(16, triton.next_power_of_2(edge_dim)),
            TWO_LAYER=w2 is not None,
            HAS_B2=b2 is not None,
            HAS_GATE=w_gate is not None,
            HAS_BG=b_gate is not None,
            HAS_WEIGHT=weight is not None,
            ACT=_ACT_CODES[act],
            PRECISION=precision,
            COMPUTE=tl.float64 if p.dtype == torch.float64 else tl.float32,
            BLOCK_H=block_h,
            BLOCK_O=block_o,
            BLOCK_E=tiles.block_e,
            num_warps=tiles.num_warps,
        )
        args = (
            p,
            q,
            dummy if edge_attr is None else edge_attr,
            dummy if w_edge is None else w_edge,
            dummy if w2 is None else w2,
            dummy if b2 is None else b2,
            dummy if w_gate is None else w_gate,
            dummy if b_gate is None else b_gate,
            dummy if weight is None else weight,
        )
        strides = (
            p.stride(0),
            q.stride(0),
            0 if edge_attr is None else edge_attr.stride(0),
            0 if w_edge is None else w_edge.stride(0),
            0 if w2 is None else w2.stride(0),
        )
        source, target = plan.sources.index, plan.targets.index
        columns = triton.cdiv(width, block_o)
        if plan.layout == "csr" and tiles.reduction == "segment":
            out = p.new_empty(num_nodes, width, dtype=accumulate)
            launch(
                _csr_segment_kernel, (triton.cdiv(num_nodes, tiles.block_n), columns),
                *args, plan.targets.ptr, source, out,
                num_nodes, hidden, width, edge_dim, *strides, out.stride(0),
                NUM_STAGES=tiles.num_stages, ROWS=tiles.block_n, **common,
            )  # fmt: skip
        elif plan.layout == "csr":
            out = p.new_empty(num_nodes, width, dtype=accumulate)
            block_n = tiles.block_n
            grid = (triton.cdiv(num_nodes, block_n), columns)
            launch(
                _csr_forward_kernel, grid,
                *args, plan.targets.ptr, source, target, out,
                num_nodes, hidden, width, edge_dim, *strides, out.stride(0),
                SUM_PRECISION=sum_precision, BLOCK_N=block_n, NUM_STAGES=tiles.num_stages, **common,
            )  # fmt: skip
        else:
            out = p.new_zeros(num_nodes, width, dtype=accumulate)
            grid = (triton.cdiv(plan.num_edges, common["BLOCK_E"]), columns)
            launch(
                _atomic_forward_kernel, grid,
                *args, source, target, out,
                plan.num_edges, hidden, width, edge_dim, *strides, out.stride(0),
                **common,
            )  # fmt: skip
        return out.to(p.dtype)

    def backward(self, grad_out: Tensor, inputs: Inputs, plan: _Plan, act: str, needs: tuple[bool, ...]) -> Grads:
        return _EAGER.backward(grad_out, inputs, plan, act, needs)


ENGINE = _TritonEngine()
