"""Triton kernels of :func:`zoo.kernels.message_aggregate` (imported only for ``backend="triton"``).

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
Backward (CSR): :func:`_csr_backward_kernel`, one program per target row like the forward, recomputes each block
of messages and takes it back through the gate and edge weights, the second Linear and the activations;
``dL/dP_i`` is summed in the program in a fixed order, ``dL/d pre`` stored once per edge and summed over sources
by :func:`_segment_rows_kernel` through the sources' sorting permutation; the weights' gradients are reduced from
what the kernel stores (bitwise repeatable). It serves forces with frozen weights (the ASE calculator,
``zoo.predict``) and training on energies. Second derivatives (``create_graph=True``: training on forces), the
atomic layout and rows too wide for one program use the PyTorch engine (:mod:`zoo.kernels.message`), so gradients
of any order work.
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
from zoo.kernels.segment import Segments, _segment_sum_impl

__all__ = [
    "ENGINE",
    "REDUCTIONS",
    "LaunchConfig",
    "Tiles",
    "backward_tiles",
    "launch_config",
    "resolve_config",
    "segment_rows_sum",
]

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
        block_e: edges per step of the edge loop (default 32; 16 for two-layer messages and edge features
            wider than 16, see :func:`resolve_config`).
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
    config: LaunchConfig,
    hidden: int,
    width: int,
    *,
    two_layer: bool,
    element_size: int = 4,
    gated: bool = False,
    edge_dim: int = 1,
) -> Tiles:
    """The tiles a call with ``hidden`` features and ``width`` output columns runs with under ``config``.

    Two-layer messages hold a ``[block_h, block_o]`` tile of ``W_2`` (``element_size`` bytes per element): by
    default at most 64 KiB, so that with the kernel's other buffers it stays within the 99 KiB of shared memory
    a program may have on every CUDA GPU since Ampere (benchmarks/triton_compile.py reports the figures).
    A ``gated`` message (EGNN's attention) needs the whole message row in one program: ``block_o`` is the padded
    width (for two-layer float64 messages wider than 64 that exceeds the 64 KiB, which sm_80 and sm_90 hold).
    Edge steps default to 32 edges, 16 for two-layer messages and for edge features applied by ``tl.dot``
    (``edge_dim`` > 16): the exact (FMA) products of those keep whole rows of both operands per thread, and at 32
    edges ``ptxas`` spills registers (``benchmarks/triton_compile.py`` shows it; 16 does not, in float32 and
    bfloat16).

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
        block_e=config.block_e or (16 if two_layer or edge_dim > _EDGE_LOOP_MAX else 32),
        block_n=block_n,
        num_warps=config.num_warps or (8 if block_h * block_o >= 128 * 64 else 4),
        num_stages=config.num_stages or 1,
        exact_sums=bool(config.exact_sums),
    )


def backward_tiles(
    hidden: int, width: int, *, two_layer: bool, element_size: int = 4, config: LaunchConfig = _CONFIG
) -> Tiles | None:
    """The tiles of :func:`_csr_backward_kernel` for a call, or ``None`` when its rows are too wide for one program
    (every column in one program; two-layer: a ``W_2`` tile of at most 64 KiB, as :func:`resolve_config`;
    one-layer: at most 256 columns). The PyTorch engine takes those calls. By default 16 edges per step; 16 warps
    for float32 two-layer messages of 128 x 128 and more (at 8, ``ptxas`` spills registers on sm_90); ``config``'s
    ``block_e``, ``block_n`` and ``num_warps`` override them (the tuning sweep)."""
    block_h = max(16, triton.next_power_of_2(hidden))
    block_o = max(16, triton.next_power_of_2(width)) if two_layer else block_h
    if (two_layer and block_h * block_o * element_size > 65536) or block_h > 256:
        return None
    if two_layer and element_size == 4 and block_h * block_o >= 128 * 128:
        num_warps = 16
    else:
        num_warps = 8 if block_h * block_o >= 128 * 64 else 4
    return Tiles(
        reduction="segment",
        block_h=block_h,
        block_o=block_o,
        block_e=config.block_e or 16,
        block_n=config.block_n or (16 if two_layer else 1),
        num_warps=config.num_warps or num_warps,
        num_stages=1,
        exact_sums=True,
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
def _pre_activations(
    pre,
    q_ptr,
    e_ptr,
    we_ptr,
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
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """First-layer pre-activations :math:`P_i + Q_j + e_{ij} W_e^\\top` ``[BLOCK_E, width]`` of a block of edges from
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
    return pre


@triton.jit
def _mlp_tail(
    pre, w2, b2, TWO_LAYER: tl.constexpr, HAS_B2: tl.constexpr, ACT: tl.constexpr, PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
):  # fmt: skip
    """``(z, message)``: the input of the last activation (``pre`` for one-layer messages) and the messages."""
    if TWO_LAYER:
        z = tl.dot(_activation(pre, ACT).to(w2.dtype), w2, input_precision=PRECISION, out_dtype=COMPUTE)
        if HAS_B2:
            z += b2[None, :]
    else:
        z = pre
    return z, _activation(z, ACT)


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
    pre = _pre_activations(
        pre, q_ptr, e_ptr, we_ptr, source, offs_e, mask_e, cols, mask_cols, stride_q, stride_e, stride_we, D,
        EDGE_MODE, D_LOOP, BLOCK_D, PRECISION, COMPUTE,
    )  # fmt: skip
    _, message = _mlp_tail(pre, w2, b2, TWO_LAYER, HAS_B2, ACT, PRECISION, COMPUTE)
    return message


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


@triton.jit
def _activation_grad(x, ACT: tl.constexpr):
    """The derivative of :func:`_activation` at ``x`` (SiLU: :math:`s(1 + x(1 - s))`, s = sigmoid; ReLU: x > 0)."""
    if ACT == 0:
        s = tl.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    else:
        return tl.where(x > 0.0, 1.0, 0.0)


@triton.jit
def _csr_backward_kernel(
    grad_out_ptr,
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
    grad_p_ptr,
    grad_pre_ptr,
    grad_e_ptr,
    grad_ew_ptr,
    hidden_ptr,
    grad_z_ptr,
    row_gate_ptr,
    row_bias_ptr,
    N,
    H,
    H2,
    D,
    stride_go,
    stride_p,
    stride_q,
    stride_e,
    stride_we,
    stride_w2,
    EDGE_MODE: tl.constexpr,
    D_LOOP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_LAYER: tl.constexpr,
    HAS_B2: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_BG: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    NEED_P: tl.constexpr,
    STORE_PRE: tl.constexpr,
    NEED_E: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    STORE_HIDDEN: tl.constexpr,
    STORE_GRAD_Z: tl.constexpr,
    NEED_GATE: tl.constexpr,
    ACT: tl.constexpr,
    PRECISION: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_O: tl.constexpr,
    ROWS: tl.constexpr,
):
    """Input gradients of the CSR message sum, per target row: the row's ``dL/d out_i`` and ``P_i`` are loaded once;
    for each block of its edges the messages are recomputed and taken back through the gate and edge weights, the
    second Linear and the activations to ``dL/d pre_ij``, whose row sum is ``dL/dP_i`` (fixed order). Stored per
    edge when asked: ``dL/d pre`` (summed over sources outside; with the edge features, the edge projection's
    gradient), ``dL/d e_ij``, ``dL/d w_ij``, and for the second Linear's gradients its input and ``dL/dz``; per
    target row, the gate's weight and bias gradients summed over the row's edges. A program holds every column
    (the second Linear's backward and the gate mix them)."""
    cols = tl.arange(0, BLOCK_H)
    mask_cols = cols < H
    out_cols = tl.arange(0, BLOCK_O)
    mask_out_cols = out_cols < H2
    _, _, w2, b2 = _second_layer(
        w2_ptr, b2_ptr, out_cols, mask_out_cols, stride_w2, H, TWO_LAYER, HAS_B2, COMPUTE, BLOCK_H
    )
    w_gate, b_gate = _gate_weights(wg_ptr, bg_ptr, out_cols, mask_out_cols, HAS_GATE, HAS_BG, COMPUTE)
    for local in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + local
        if row < N:
            edge_start = tl.load(ptr_ptr + row)
            edge_stop = tl.load(ptr_ptr + row + 1)
            p_row = tl.load(p_ptr + row * stride_p + cols, mask=mask_cols, other=0.0).to(COMPUTE)
            grad_row = tl.load(grad_out_ptr + row * stride_go + out_cols, mask=mask_out_cols, other=0.0).to(COMPUTE)
            acc = tl.zeros([BLOCK_E, BLOCK_H], dtype=COMPUTE)
            acc_gate = tl.zeros([BLOCK_O], dtype=COMPUTE)  # summed per block of edges: fewer live registers
            acc_bias = tl.zeros([BLOCK_E], dtype=COMPUTE)
            for start in range(edge_start, edge_stop, BLOCK_E):
                offs_e = start + tl.arange(0, BLOCK_E)
                mask_e = offs_e < edge_stop
                mask = mask_e[:, None] & mask_cols[None, :]
                source = tl.load(source_ptr + offs_e, mask=mask_e, other=0)
                pre = _pre_activations(
                    p_row[None, :], q_ptr, e_ptr, we_ptr, source, offs_e, mask_e, cols, mask_cols,
                    stride_q, stride_e, stride_we, D, EDGE_MODE, D_LOOP, BLOCK_D, PRECISION, COMPUTE,
                )  # fmt: skip
                z, message = _mlp_tail(pre, w2, b2, TWO_LAYER, HAS_B2, ACT, PRECISION, COMPUTE)
                if STORE_HIDDEN:  # the second Linear's input, for its weight gradient
                    tl.store(hidden_ptr + offs_e[:, None] * H + cols[None, :], _activation(pre, ACT), mask=mask)
                grad = tl.zeros([BLOCK_E, BLOCK_O], dtype=COMPUTE) + grad_row[None, :]
                if HAS_GATE or HAS_WEIGHT:
                    # m -> s m with s = sigmoid(m . w_g + b_g) * w: dL/dm = s g + dL/dlogit w_g
                    inner = tl.sum(grad * message, axis=1)
                    scale = tl.zeros([BLOCK_E], dtype=COMPUTE) + 1.0
                    if HAS_GATE:
                        gate = tl.sigmoid(tl.sum(message * w_gate[None, :], axis=1) + b_gate)
                        scale = gate
                    if HAS_WEIGHT:
                        weight = tl.load(ew_ptr + offs_e, mask=mask_e, other=0.0).to(COMPUTE)
                        if NEED_WEIGHT:
                            tl.store(grad_ew_ptr + offs_e, inner * scale, mask=mask_e)
                        scale = scale * weight
                    grad_message = grad * scale[:, None]
                    if HAS_GATE:
                        grad_logit = tl.where(mask_e, inner * scale * (1.0 - gate), 0.0)
                        grad_message += grad_logit[:, None] * w_gate[None, :]
                        if NEED_GATE:
                            acc_gate += tl.sum(grad_logit[:, None] * message, axis=0)
                            acc_bias += grad_logit
                    grad = grad_message
                grad_z = grad * _activation_grad(z, ACT)
                mask_z = mask_e[:, None] & mask_out_cols[None, :]
                if STORE_GRAD_Z:
                    tl.store(grad_z_ptr + offs_e[:, None] * H2 + out_cols[None, :], grad_z, mask=mask_z)
                if TWO_LAYER:
                    grad_hidden = tl.dot(
                        grad_z.to(w2.dtype), tl.trans(w2), input_precision=PRECISION, out_dtype=COMPUTE
                    )
                    grad_pre = grad_hidden * _activation_grad(pre, ACT)
                else:
                    grad_pre = grad_z
                grad_pre = tl.where(mask, grad_pre, 0.0)
                if NEED_P:
                    acc += grad_pre
                if STORE_PRE:
                    tl.store(grad_pre_ptr + offs_e[:, None] * H + cols[None, :], grad_pre, mask=mask)
                if NEED_E:
                    if EDGE_MODE == 1:
                        for d in tl.static_range(D_LOOP):
                            w_d = tl.load(we_ptr + cols * stride_we + d, mask=mask_cols, other=0.0).to(COMPUTE)
                            tl.store(grad_e_ptr + offs_e * D + d, tl.sum(grad_pre * w_d[None, :], axis=1), mask=mask_e)
                    elif EDGE_MODE == 2:
                        offs_d = tl.arange(0, BLOCK_D)
                        mask_d = offs_d < D
                        we = tl.load(
                            we_ptr + cols[:, None] * stride_we + offs_d[None, :],
                            mask=mask_cols[:, None] & mask_d[None, :],
                            other=0.0,
                        )
                        grad_e = tl.dot(grad_pre.to(we.dtype), we, input_precision=PRECISION, out_dtype=COMPUTE)
                        tl.store(
                            grad_e_ptr + offs_e[:, None] * D + offs_d[None, :],
                            grad_e,
                            mask=mask_e[:, None] & mask_d[None, :],
                        )
            if NEED_P:
                tl.store(grad_p_ptr + row * H + cols, tl.sum(acc, axis=0), mask=mask_cols)
            if NEED_GATE:
                tl.store(row_gate_ptr + row * H2 + out_cols, acc_gate, mask=mask_out_cols)
                tl.store(row_bias_ptr + row, tl.sum(acc_bias, axis=0))


@triton.jit
def _segment_rows_kernel(
    src_ptr, perm_ptr, ptr_ptr, out_ptr, H, HAS_PERM: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr
):  # fmt: skip
    """``out[n] = sum of src[perm[k]]`` over the sorted positions ``k`` of segment ``n`` (``src [E, H]``
    contiguous): one program per segment and tile of columns, rows gathered through the permutation (no
    permuted copy of ``src``), summed in a fixed order."""
    node = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_cols = cols < H
    start = tl.load(ptr_ptr + node)
    stop = tl.load(ptr_ptr + node + 1)
    acc = tl.zeros([BLOCK_E, BLOCK_H], dtype=out_ptr.dtype.element_ty)
    for first in range(start, stop, BLOCK_E):
        positions = first + tl.arange(0, BLOCK_E)
        mask_e = positions < stop
        if HAS_PERM:
            rows = tl.load(perm_ptr + positions, mask=mask_e, other=0)
        else:
            rows = positions
        mask = mask_e[:, None] & mask_cols[None, :]
        acc += tl.load(src_ptr + rows[:, None] * H + cols[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + node * H + cols, tl.sum(acc, axis=0), mask=mask_cols)


def segment_rows_sum(src: Tensor, segments: Segments) -> Tensor:
    """``[N, H]`` sums of the rows of ``src [E, H]`` over ``segments`` by :func:`_segment_rows_kernel` when the
    segments have row pointers (on CUDA, the sources of a receiver-sorted graph: through their sorting permutation);
    otherwise :func:`zoo.kernels.segment._segment_sum_impl`. Bitwise repeatable either way."""
    if segments.ptr is None or src.shape[0] == 0 or segments.num_segments == 0:
        return _segment_sum_impl(src, segments)
    src = src.contiguous()
    hidden = src.shape[1]
    out = src.new_empty(segments.num_segments, hidden)
    block_h = min(128, max(16, triton.next_power_of_2(hidden)))
    perm = segments.perm
    launch(
        _segment_rows_kernel, (segments.num_segments, triton.cdiv(hidden, block_h)),
        src, src if perm is None else perm, segments.ptr, out, hidden,
        HAS_PERM=perm is not None, BLOCK_E=32, BLOCK_H=block_h, num_warps=4,
    )  # fmt: skip
    return out


def _precision(dtype: torch.dtype) -> tuple[str, str]:
    """(precision of the second Linear, precision of the one-hot reduction) for ``tl.dot``."""
    if dtype == torch.float64:
        return "ieee", "ieee"
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32", "tf32x3"
    return "ieee", "tf32x3"


def _feature_constants(inputs: Inputs, act: str) -> dict:
    """The constexpr arguments every message kernel takes from a call's inputs: how edge features are applied,
    which optional parts (second Linear and its bias, gate and its bias, edge weights) it has, the activation, the
    second Linear's ``tl.dot`` precision and the compute dtype."""
    p, _, edge_attr, _, w2, b2, w_gate, b_gate, weight = inputs
    edge_dim = 0 if edge_attr is None else edge_attr.shape[1]
    edge_mode = 0 if edge_dim == 0 else (1 if edge_dim <= _EDGE_LOOP_MAX else 2)
    return dict(
        EDGE_MODE=edge_mode,
        D_LOOP=edge_dim if edge_mode == 1 else 0,
        BLOCK_D=max(16, triton.next_power_of_2(edge_dim)),
        TWO_LAYER=w2 is not None,
        HAS_B2=b2 is not None,
        HAS_GATE=w_gate is not None,
        HAS_BG=b_gate is not None,
        HAS_WEIGHT=weight is not None,
        ACT=_ACT_CODES[act],
        PRECISION=_precision(p.dtype)[0],
        COMPUTE=tl.float64 if p.dtype == torch.float64 else tl.float32,
    )


class _TritonEngine:
    """Triton forward and (CSR) backward; the PyTorch engine (:data:`zoo.kernels.message._EAGER`) for the rest."""

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
        tiles = resolve_config(
            _CONFIG,
            hidden,
            width,
            two_layer=w2 is not None,
            element_size=p.element_size(),
            gated=w_gate is not None,
            edge_dim=edge_dim,
        )
        block_h, block_o = tiles.block_h, tiles.block_o
        sum_precision = "ieee" if tiles.exact_sums else _precision(p.dtype)[1]
        dummy = p  # never read: pointer arguments of disabled features
        common = dict(
            **_feature_constants(inputs, act),
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
        """First derivatives of a CSR call by :func:`_csr_backward_kernel` (one program per target row) and
        reductions of what it stores: the sums over sources by :func:`segment_rows_sum`, the weight gradients by a
        product over edges (edge projection, second Linear) or a sum over rows (gate). The atomic layout and rows
        too wide for one program go through the PyTorch engine."""
        p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = inputs
        hidden = p.shape[1]
        width = hidden if w2 is None else w2.shape[0]
        tiles = backward_tiles(hidden, width, two_layer=w2 is not None, element_size=p.element_size(), config=_CONFIG)
        if plan.layout != "csr" or tiles is None or plan.num_edges == 0 or plan.num_nodes == 0:
            return _EAGER.backward(grad_out, inputs, plan, act, needs)
        p, q, edge_attr, w_edge, w2, b2, w_gate, b_gate, weight = (
            None if t is None else t.contiguous() for t in inputs
        )
        grad_out = grad_out.contiguous()
        accumulate = torch.float64 if p.dtype == torch.float64 else torch.float32
        edge_dim = 0 if edge_attr is None else edge_attr.shape[1]
        need_e = needs[2] and edge_attr is not None
        need_w_edge = needs[3] and edge_attr is not None
        need_weight = needs[8] and weight is not None
        need_gate = (needs[6] or needs[7]) and w_gate is not None
        store_grad_z = (needs[4] or needs[5]) and w2 is not None
        num_edges, num_nodes = plan.num_edges, plan.num_nodes

        def buffer(needed: bool, *shape: int) -> Tensor | None:
            return p.new_empty(*shape, dtype=accumulate) if needed else None

        grad_p = buffer(needs[0], num_nodes, hidden)
        grad_pre = buffer(needs[1] or need_w_edge, num_edges, hidden)
        grad_e = buffer(need_e, num_edges, edge_dim)
        grad_weight = buffer(need_weight, num_edges)
        hidden_out = buffer(needs[4] and w2 is not None, num_edges, hidden)
        grad_z = buffer(store_grad_z, num_edges, width)
        row_gate = buffer(need_gate, num_nodes, width)
        row_bias = buffer(need_gate, num_nodes)
        dummy = p  # never written or read: pointer arguments of disabled features
        launch(
            _csr_backward_kernel, (triton.cdiv(num_nodes, tiles.block_n),),
            grad_out, p, q,
            *(dummy if t is None else t for t in (edge_attr, w_edge, w2, b2, w_gate, b_gate, weight)),
            plan.targets.ptr, plan.sources.index,
            *(
                dummy if t is None else t
                for t in (grad_p, grad_pre, grad_e, grad_weight, hidden_out, grad_z, row_gate, row_bias)
            ),
            num_nodes, hidden, width, edge_dim,
            grad_out.stride(0), p.stride(0), q.stride(0),
            0 if edge_attr is None else edge_attr.stride(0),
            0 if w_edge is None else w_edge.stride(0),
            0 if w2 is None else w2.stride(0),
            **_feature_constants(inputs, act),
            NEED_P=needs[0],
            STORE_PRE=grad_pre is not None,
            NEED_E=need_e,
            NEED_WEIGHT=need_weight,
            STORE_HIDDEN=hidden_out is not None,
            STORE_GRAD_Z=store_grad_z,
            NEED_GATE=need_gate,
            BLOCK_E=tiles.block_e,
            BLOCK_H=tiles.block_h,
            BLOCK_O=tiles.block_o,
            ROWS=tiles.block_n,
            num_warps=tiles.num_warps,
        )  # fmt: skip

        def cast(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
            return None if grad is None or like is None else grad.to(like.dtype)

        return (
            cast(grad_p, p),
            cast(segment_rows_sum(grad_pre, plan.sources) if needs[1] else None, q),
            cast(grad_e, edge_attr),
            cast(grad_pre.t() @ edge_attr.to(accumulate) if need_w_edge else None, w_edge),
            cast(grad_z.t() @ hidden_out if hidden_out is not None else None, w2),
            cast(grad_z.sum(0) if needs[5] and store_grad_z and b2 is not None else None, b2),
            cast(row_gate.sum(0) if needs[6] and need_gate else None, w_gate),
            cast(row_bias.sum().reshape(b_gate.shape) if needs[7] and need_gate else None, b_gate),
            cast(grad_weight, weight),
        )


ENGINE = _TritonEngine()
