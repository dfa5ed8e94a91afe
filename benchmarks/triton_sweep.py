"""Tuning sweep of the Triton message-passing kernels (``backend="triton"``): which tile sizes and launch options
bring the fused forward closest to the memory-bandwidth roofline on this GPU.

    python -m benchmarks.triton_sweep --out out/gpu/sweep            # CUDA (bash benchmarks/gpu.sh runs it)
    TRITON_INTERPRET=1 python -m benchmarks.triton_sweep --device cpu --quick --out out/sweep-smoke

For every workload (default ``bulk-10k`` and ``bulk-64k``, H = 128), layout (``csr``, ``atomic``, and
``csr-backward``: the backward kernel for the input gradients, as forces take them, over ``block_e``, ``block_n``
and ``num_warps``) and message MLP (one Linear + SiLU; ``--two-layer`` adds the two-layer form) it runs a
coordinate search over :class:`zoo.kernels._triton_message.LaunchConfig`: starting from the defaults, each field
in turn takes each of its candidate values with the others held at the best so far, for ``--passes`` passes.
Every configuration is

- checked: its output against the ``torch`` backend (largest difference relative to the largest output, must
  stay below 1e-4 in float32), and for CSR computed twice and compared bitwise;
- timed twice, median of ``--runs`` calls after warm-up: the kernel alone (node projections, plan and inputs
  prepared once; the call is what :func:`zoo.kernels.message_aggregate` spends in the engine) and the whole
  ``message_aggregate`` call (projections ``P = h W_t^T``, ``Q = h W_s^T`` by cuBLAS, checks, launch);
- reported as effective GB/s (:func:`benchmarks.workloads.bytes_moved`, the same logical bytes as the
  ``op`` section of :mod:`benchmarks.message_passing`) and % of the copy bandwidth measured at the start.

Configurations that fail to compile or launch (shared memory, registers) are recorded with their error. Results
go to ``results.json`` (every configuration tried) and ``results.md`` (default against best per case), rewritten
after each case; the best configurations are what ``_TritonEngine`` should use as its defaults on that GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.message_passing import copy_bandwidth, measure
from benchmarks.workloads import Graph, bytes_moved, bytes_moved_backward, make_graph, write_results
from zoo.kernels import build_csr, message_aggregate
from zoo.kernels.message import EdgeMLP, _make_plan, engine_inputs

#: Candidate values per LaunchConfig field (CSR-only fields are skipped for the atomic layout).
SPACE: dict[str, tuple[object, ...]] = {
    "reduction": ("segment", "onehot"),
    "block_o": (16, 32, 64, 128),
    "block_e": (16, 32, 64, 128),
    "block_n": (1, 2, 4, 16, 32, 64),
    "num_warps": (2, 4, 8),
    "num_stages": (1, 2, 3, 4),
    "exact_sums": (False, True),
}
#: Candidate values for the CSR backward kernel (layout "csr-backward": input gradients, the MLP frozen).
BACKWARD_SPACE: dict[str, tuple[object, ...]] = {
    "block_e": (16, 32, 64),
    "block_n": (1, 2, 4, 16),
    "num_warps": (4, 8, 16),
}
CSR_ONLY = ("reduction", "block_n", "num_stages", "exact_sums")
ONEHOT_ONLY = ("exact_sums",)  # fields the segment reduction does not use
ONEHOT_MIN_ROWS = 16  # the one-hot reduction's block_n is a tl.dot dimension
TOLERANCE = 1e-4  # largest |difference| / largest |output| against the torch backend, float32


def _message_mlp(hidden: int, two_layer: bool, device: torch.device) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(2 * hidden + 1, hidden), nn.SiLU()]
    if two_layer:
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    return nn.Sequential(*layers).to(device)


def _space(layout: str) -> dict[str, tuple[object, ...]]:
    if layout == "csr-backward":
        return dict(BACKWARD_SPACE)
    return {key: values for key, values in SPACE.items() if layout == "csr" or key not in CSR_ONLY}


def _normalise(config: dict[str, object]) -> dict[str, object]:
    """``config`` as it launches: without the fields its CSR reduction ignores, and the one-hot reduction with at
    least 16 rows per program (so equal launches are tried once, and every one can run)."""
    if config.get("reduction") == "segment":
        return {key: value for key, value in config.items() if key not in ONEHOT_ONLY}
    if config.get("reduction") == "onehot" and int(config.get("block_n") or ONEHOT_MIN_ROWS) < ONEHOT_MIN_ROWS:
        return {**config, "block_n": ONEHOT_MIN_ROWS}
    return config


def sweep_case(
    graph: Graph, hidden: int, layout: str, two_layer: bool, bandwidth: float, args: argparse.Namespace
) -> list[dict]:
    """Coordinate search over the launch configurations for one case; one row per configuration tried. Layout
    ``"csr-backward"``: the CSR backward kernel for the input gradients (node and edge features, the MLP frozen:
    forces), checked against the PyTorch engine's backward."""
    from zoo.kernels._triton_message import ENGINE, LaunchConfig, backward_tiles, launch_config, resolve_config
    from zoo.kernels.message import _EAGER

    device = graph.pos.device
    backward = layout == "csr-backward"
    mlp = _message_mlp(hidden, two_layer, device).requires_grad_(False)
    generator = torch.Generator(device="cpu").manual_seed(1)
    h = torch.randn(graph.num_nodes, hidden, generator=generator).to(device)
    edge_attr = torch.rand(graph.num_edges, 1, generator=generator).to(device)
    grad_out = torch.randn(graph.num_nodes, hidden, generator=generator).to(device)
    edges = graph.edge_index if layout == "atomic" else graph.csr
    weights = EdgeMLP.from_module(mlp, hidden, 1)
    with torch.no_grad():
        inputs = engine_inputs(h, edge_attr, weights)
    plan = _make_plan(edges, graph.num_nodes, "atomic" if layout == "atomic" else "csr")
    needs = (True, True, True, False, False, False, False, False, False)

    def engine_call() -> torch.Tensor:
        if backward:  # the gradients of P, Q and the edge features, flattened into one tensor to compare
            return torch.cat([g.flatten() for g in ENGINE.backward(grad_out, inputs, plan, weights.act, needs)[:3]])
        return ENGINE.forward(inputs, plan, weights.act)

    def whole_call() -> Callable[[], object]:
        if not backward:
            return lambda: message_aggregate(h, edges, edge_attr, mlp, backend="triton", layout=layout)
        leaves = [h.clone().requires_grad_(), edge_attr.clone().requires_grad_()]
        out = message_aggregate(leaves[0], edges, leaves[1], mlp, backend="triton")
        return lambda: torch.autograd.grad(out, leaves, grad_out, retain_graph=True)

    with torch.no_grad():
        if backward:
            grads = _EAGER.backward(grad_out, inputs, plan, weights.act, needs)[:3]
            reference = torch.cat([g.flatten() for g in grads])
            nbytes = bytes_moved_backward(graph, hidden, h.dtype, two_layer)
            tiles = dataclasses.asdict(backward_tiles(hidden, hidden, two_layer=two_layer))
        else:
            reference = message_aggregate(h, graph.csr, edge_attr, mlp, backend="torch")
            nbytes = bytes_moved(graph, hidden, h.dtype, two_layer)
            tiles = dataclasses.asdict(resolve_config(LaunchConfig(), hidden, hidden, two_layer=two_layer))
    scale = reference.abs().max().item() or 1.0
    space = _space(layout)
    defaults = {key: tiles[key] for key in space}  # what the engine runs without a LaunchConfig
    best = dict(defaults)
    tried: dict[tuple, dict] = {}

    def run(config: dict[str, object]) -> dict:
        config = _normalise(config)
        key = tuple(sorted(config.items()))
        if key in tried:
            return tried[key]
        row = {"workload": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges, "hidden": hidden}
        row.update({"layout": layout, "mlp_layers": 2 if two_layer else 1, "config": dict(config)})
        try:
            with launch_config(LaunchConfig(**config)):
                with torch.no_grad():
                    first = engine_call()
                    row["rel_error"] = (first - reference).abs().max().item() / scale
                    row["ok"] = row["rel_error"] <= TOLERANCE
                    if layout != "atomic":
                        row["bitwise_repeatable"] = bool(torch.equal(first, engine_call()))
                        row["ok"] = row["ok"] and row["bitwise_repeatable"]
                fns = {"kernel": torch.no_grad()(engine_call), "op": whole_call()}
                timings = measure(fns, device, args.runs, args.warmup)
        except Exception as error:  # compile/launch failures of a configuration are results, not crashes
            row.update(ok=False, error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
            tried[key] = row
            return row
        for name, timing in timings.items():
            if "median_s" not in timing:
                row.update(ok=False, error=timing.get("error", "no timing"))
                continue
            seconds = timing["median_s"]
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_gbs"] = nbytes / seconds / 1e9
            row[f"{name}_pct_copy"] = 100 * nbytes / seconds / 1e9 / bandwidth
        tried[key] = row
        return row

    def better(row: dict | None, incumbent: dict) -> bool:
        return (
            row is not None
            and row.get("ok", False)
            and row.get("kernel_ms", float("inf")) < incumbent.get("kernel_ms", float("inf"))
        )

    incumbent = run(best)
    for _ in range(args.passes):
        for field, values in space.items():
            for value in values:
                row = run({**defaults, **best, field: value})
                if better(row, incumbent):
                    incumbent, best = row, dict(row["config"])
    for row in tried.values():
        row["default"] = row["config"] == _normalise(defaults)
        row["best"] = row is incumbent
    return list(tried.values())


def _first_nodes(graph: Graph, count: int) -> Graph:
    """The subgraph of the first ``count`` nodes (edges stay sorted by target)."""
    edge_index = graph.edge_index[:, (graph.edge_index < count).all(dim=0)]
    return Graph(graph.name, graph.pos[:count], edge_index, build_csr(edge_index, count))


def _cell(row: dict | None, key: str) -> str:
    if row is None or key + "_ms" not in row:
        return "–" if row is None else f"failed: {row.get('error', 'wrong result')}"
    return f"{row[key + '_ms']:.3f} ms, {row[key + '_gbs']:.0f} GB/s ({row[key + '_pct_copy']:.1f} %)"


def markdown(results: dict) -> str:
    """Default against best configuration per case, kernel alone and whole call."""
    lines = [
        f"# Triton kernel sweep: {results['device_name']}",
        "",
        f"torch {results['torch']}, triton {results['triton']}, copy bandwidth {results['copy_gbs']:.0f} GB/s, "
        f"float32, median of {results['runs']} calls per configuration.",
        "",
        "| workload (N, E) | H | layout | MLP | tried | default: kernel | best: kernel | best: whole call "
        "| best config |",
        "|---|---:|---|---:|---:|---|---|---|---|",
    ]
    cases: dict[tuple, list[dict]] = {}
    for row in results["rows"]:
        cases.setdefault((row["workload"], row["hidden"], row["layout"], row["mlp_layers"]), []).append(row)
    for (workload, hidden, layout, layers), rows in cases.items():
        default = next((row for row in rows if row.get("default")), None)
        best = next((row for row in rows if row.get("best")), None)
        config = ", ".join(f"{k}={v}" for k, v in best["config"].items()) if best else "–"
        size = f"{workload} ({rows[0]['nodes']}, {rows[0]['edges']})"
        lines.append(
            f"| {size} | {hidden} | {layout} | {layers} | {len(rows)} | {_cell(default, 'kernel')} | "
            f"{_cell(best, 'kernel')} | {_cell(best, 'op')} | {config} |"
        )
    failed = sum(1 for row in results["rows"] if not row.get("ok"))
    lines += ["", f"{failed} configuration(s) failed to run or to match the torch backend (see results.json)."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--workloads", nargs="*", default=["bulk-10k", "bulk-64k"])
    parser.add_argument("--hidden", nargs="*", type=int, default=[128])
    parser.add_argument(
        "--layouts",
        nargs="*",
        default=["csr", "atomic", "csr-backward"],
        choices=["csr", "atomic", "csr-backward"],
        help="csr-backward: the backward kernel for the input gradients (forces)",
    )
    parser.add_argument("--two-layer", action="store_true", help="also sweep the two-layer message MLP")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per configuration (default 30)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="passes of the coordinate search (default 2)")
    parser.add_argument("--quick", action="store_true", help="qm9-sized graph, H = 16, 3 runs, one pass (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.workloads, args.hidden, args.runs, args.warmup, args.passes = ["qm9"], [16], 3, 1, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    import triton

    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("the sweep runs the Triton kernels: use a CUDA device, or TRITON_INTERPRET=1 on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "runs": args.runs,
        "space": SPACE,
        "copy_gbs": copy_bandwidth(device, max(args.runs, 5)),
        "rows": [],
    }
    for name in args.workloads:
        graph = make_graph(name, device)
        if args.quick:  # a few hundred edges: the interpreter runs every program in Python
            graph = _first_nodes(graph, 64)
        for hidden in args.hidden:
            for layout in args.layouts:
                for two_layer in (False, True) if args.two_layer else (False,):
                    results["rows"] += sweep_case(graph, hidden, layout, two_layer, results["copy_gbs"], args)
                    write_results(args.out, results, markdown(results))
                    print(f"{name} H={hidden} {layout} {'two' if two_layer else 'one'}-layer done", flush=True)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
