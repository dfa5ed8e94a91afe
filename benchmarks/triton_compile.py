"""Compile every Triton kernel variant of zoo for CUDA GPUs, without a GPU: registers, spills, vector loads.

    python -m benchmarks.triton_compile --out out/triton-compile              # sm_80 and sm_90, all variants
    python -m benchmarks.triton_compile --arch 90 --quick --out out/tc-smoke   # the engines' defaults only

The engines (:mod:`zoo.kernels._triton_message`, :mod:`zoo.kernels._triton_so2`) are called on small CPU tensors
inside :func:`zoo.kernels._triton_launch.compile_only`: each launch is compiled for the architecture, with the
argument specialisation Triton's JIT gives the same call on a GPU, through Triton's whole NVIDIA pipeline and
``ptxas``; nothing runs. For every variant the table gives registers per thread, spilled bytes per thread
(local memory plus stack frame, where ptxas puts spills: should be 0), static shared memory and the global loads
by width in the SASS (``LDG.E.128``: one 16-byte vector load per thread, what the gathered feature rows should
use).

Variants: the message kernels (CSR segment and one-hot reductions, atomic) for float32 / float64 / bfloat16,
one- and two-layer MLPs, EGNN's two-layer MLP with attention gate and edge weights, edge features by loop
(D = 1), by ``tl.dot`` (D = 20) and none, at H = 64, 128, 256 (``--quick``: H = 128, D = 1); the CSR input-gradient
kernel (forces with frozen weights; with the weights' gradients for EGNN's MLP) for the same dtypes and MLPs; the
SO(2) rotations
for eSCN/EquiformerV2 shapes (K = 49 coefficients, 29 rows after m-truncation, 128 channels), sorted and
unsorted targets. What it cannot show is speed: that is
``benchmarks/triton_sweep.py`` on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from benchmarks.workloads import write_results
from zoo.kernels._triton_launch import CompileReport, compile_only
from zoo.kernels.message import EdgeMLP, _make_plan, engine_inputs
from zoo.kernels.segment import Segments, _row_pointers


@dataclasses.dataclass(frozen=True)
class Variant:
    """One engine call to compile: a message-passing forward or an SO(2) rotation."""

    family: str  # "message" | "so2"
    dtype: torch.dtype
    layout: str = "csr"  # message: "csr" | "atomic"; so2: "gather" | "scatter" | "scatter-unsorted"
    reduction: str | None = None  # CSR message reduction (None: the engine's default)
    hidden: int = 128
    edge_dim: int = 1
    two_layer: bool = False
    gated: bool = False  # EGNN's attention gate and cutoff-envelope edge weights (egnn-qm9, egnn-potential)
    backward: bool = False  # message: the CSR backward kernel (forces with frozen weights) instead of forward
    weight_grads: bool = False  # backward: the weights' gradients too (training on energies)

    @property
    def name(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        if self.family == "so2":
            return f"so2 {self.layout} {dtype}"
        layout = self.layout if self.layout == "atomic" else f"csr-{self.reduction or 'default'}"
        layers = f"{'two' if self.two_layer else 'one'}-layer{' gated+weighted' if self.gated else ''}"
        direction = (" backward+weights" if self.weight_grads else " backward") if self.backward else ""
        return f"message {layout}{direction} {dtype} H={self.hidden} D={self.edge_dim} {layers}"


def variants(quick: bool = False) -> Iterator[Variant]:
    """The variants of the module docstring (``quick``: the defaults at H = 128, D = 1, and the SO(2) kernels)."""
    dtypes = (torch.float32, torch.float64, torch.bfloat16)
    layouts = (("csr", None), ("csr", "onehot"), ("atomic", None))
    for dtype in dtypes:
        for layout, reduction in layouts:
            for two_layer in (False, True):
                if quick and (two_layer or dtype != torch.float32) and reduction == "onehot":
                    continue
                yield Variant("message", dtype, layout, reduction, two_layer=two_layer)
    for layout, reduction in layouts:  # EGNN's layers: two-layer MLP, attention gate, edge weights
        for dtype in (torch.float32,) if quick else (torch.float32, torch.float64):
            if not (quick and reduction == "onehot"):
                yield Variant("message", dtype, layout, reduction, two_layer=True, gated=True)
    # The input-gradient kernel (CSR): plain and EGNN-style messages (quick: float32 only)
    for dtype in (torch.float32,) if quick else (torch.float32, torch.float64, torch.bfloat16):
        for two_layer, gated in ((False, False), (True, False), (True, True)):
            if not (quick and two_layer and not gated):
                yield Variant("message", dtype, two_layer=two_layer, gated=gated, backward=True)
        yield Variant("message", dtype, two_layer=True, gated=True, backward=True, weight_grads=True)
    if not quick:
        for hidden in (64, 256):
            yield Variant("message", torch.float32, hidden=hidden)
            yield Variant("message", torch.float32, hidden=hidden, backward=True)
        for edge_dim in (0, 20):
            for layout, reduction in layouts:
                yield Variant("message", torch.float32, layout, reduction, edge_dim=edge_dim)
    for dtype in (torch.float32, torch.float64):
        for layout in ("gather", "scatter", "scatter-unsorted"):
            yield Variant("so2", dtype, layout)


def compile_variant(variant: Variant, arch: int) -> list[CompileReport]:
    """Compile the kernels ``variant`` launches for ``sm_{arch}`` (small CPU tensors; nothing runs)."""
    generator = torch.Generator().manual_seed(0)
    num_nodes, num_edges = 24, 160
    index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    index = index[:, index[1].argsort(stable=True)]
    with compile_only(arch) as reports:
        if variant.family == "message":
            _message(variant, index, num_nodes, generator)
        else:
            _so2(variant, index, num_nodes, generator)
    return reports


def _message(variant: Variant, edge_index: torch.Tensor, num_nodes: int, generator: torch.Generator) -> None:
    from zoo.kernels import _triton_message

    hidden, edge_dim = variant.hidden, variant.edge_dim
    layers: list[nn.Module] = [nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU()]
    if variant.two_layer:
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    mlp = nn.Sequential(*layers).to(variant.dtype)
    h = torch.randn(num_nodes, hidden, generator=generator).to(variant.dtype)
    edge_attr = torch.randn(edge_index.shape[1], edge_dim, generator=generator).to(variant.dtype) if edge_dim else None
    weights = EdgeMLP.from_module(mlp, hidden, edge_dim)
    if variant.gated:
        w_gate, b_gate = torch.randn(hidden, generator=generator), torch.randn(1, generator=generator)
        edge_weight = torch.rand(edge_index.shape[1], generator=generator)
        inputs = engine_inputs(h, edge_attr, weights, *(t.to(variant.dtype) for t in (w_gate, b_gate, edge_weight)))
    else:
        inputs = engine_inputs(h, edge_attr, weights)
    plan = _make_plan(edge_index, num_nodes, variant.layout)
    config = _triton_message.LaunchConfig(reduction=variant.reduction)
    with _triton_message.launch_config(config), torch.no_grad():
        if not variant.backward:
            _triton_message.ENGINE.forward(inputs, plan, "silu")
            return
        # the gradients of forces by autograd with frozen weights: P, Q, edge features, edge weights; the sources
        # sorted through a permutation as build_csr leaves them on CUDA (their sums: _segment_rows_kernel)
        source = edge_index[0]
        perm = torch.argsort(source, stable=True)
        sources = Segments(source, num_nodes, _row_pointers(source[perm], num_nodes), perm)
        plan = dataclasses.replace(plan, sources=sources)
        trains = variant.weight_grads
        needs = (True, True, edge_attr is not None, trains, trains, trains, trains, trains, variant.gated)
        grad_out = torch.randn(num_nodes, hidden, generator=generator).to(variant.dtype)
        _triton_message.ENGINE.backward(grad_out, inputs, plan, "silu", needs)


def _so2(variant: Variant, edge_index: torch.Tensor, num_nodes: int, generator: torch.Generator) -> None:
    from zoo.kernels import _triton_so2

    coefficients, rows, channels = 49, 29, 128  # lmax 6, mmax 2 (eSCN / EquiformerV2 OC20)
    num_edges = edge_index.shape[1]

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(variant.dtype)

    if variant.layout == "gather":
        _triton_so2.gather_rotate(
            rand(num_nodes, coefficients, channels), rand(num_edges, rows, coefficients), edge_index[0]
        )
        return
    target = edge_index[1] if variant.layout == "scatter" else edge_index[0]
    perm = None if variant.layout == "scatter" else torch.argsort(target, stable=True)
    ptr = _row_pointers(target if perm is None else target[perm], num_nodes)
    segments = Segments(target, num_nodes, ptr, perm)
    _triton_so2.rotate_back_sum(rand(num_edges, rows, channels), rand(num_edges, coefficients, rows), segments)


def report(archs: list[int], selected: Iterable[Variant]) -> list[dict]:
    """One row per compiled kernel: the variant, the architecture and the :class:`CompileReport` fields (a
    variant that fails to compile: one row with its error)."""
    rows = []
    for variant in selected:
        for arch in archs:
            try:
                compiled = compile_variant(variant, arch)
            except Exception as error:  # a variant that does not compile is a result
                message = " ".join(str(error).split())  # Triton's own errors end with the cause: keep the tail
                message = message if len(message) <= 400 else "... " + message[-400:]
                rows.append({"variant": variant.name, "arch": arch, "error": f"{type(error).__name__}: {message}"})
                continue
            rows += [{"variant": variant.name, **dataclasses.asdict(c)} for c in compiled]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | kernel | sm | registers | spilled B | shared B | global loads (SASS) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {row['error']} | {row['arch']} | | | | |")
            continue
        loads = ", ".join(f"{k} x{v}" for k, v in sorted(row["global_loads"].items()))
        lines.append(
            f"| {row['variant']} | {row['kernel']} | {row['arch']} | {row['registers']} | {row['spill_bytes']} | "
            f"{row['shared_bytes']} | {loads} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--arch", type=int, nargs="*", default=[80, 90], help="compute capabilities (default 80 90)")
    parser.add_argument("--quick", action="store_true", help="the engines' defaults only")
    args = parser.parse_args(argv)
    rows = report(args.arch, variants(args.quick))
    print(write_results(args.out, rows, markdown(rows)))
    return rows


if __name__ == "__main__":
    main()
