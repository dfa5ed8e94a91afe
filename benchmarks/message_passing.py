"""Message-passing benchmark: zoo.kernels against its peers, same process, same weights, same graphs.

    python -m benchmarks.message_passing --device cpu --out out/bench-cpu
    python -m benchmarks.message_passing --device cuda --out out/bench-cuda

Sections (each a table in ``results.md`` and a list in ``results.json``):

- ``layer``: one EGNN layer (:mod:`benchmarks.workloads`), forward + backward (gradients of the weights and of
  ``h``), for every workload and hidden size; ratio = time of PyG ``MessagePassing`` + torch-scatter (plain PyG
  where torch-scatter is not installed) / time.
- ``op``: the fused message passing alone, forward (``m = mlp([h_i, h_j, e])`` summed at targets), one- and
  two-layer MLPs; edges/s, effective GB/s (:func:`benchmarks.workloads.bytes_moved`: every gathered row counted
  each time it is read) and % of the copy bandwidth measured at the start of the same run.
- ``neighbors`` (CUDA): vesin-torch's neighbour list on the GPU against vesin on the CPU.
- ``model``: the whole ``egnn-potential`` (10,240 atoms, H = 128): energy + forces (eval mode, weights frozen, as
  the ASE calculator runs it), and a training step on
  forces (double backward), on its own code and through ``zoo.kernels`` (``set_backend``).
- ``determinism``: CSR forward and gradients computed twice, compared bitwise.

Plots next to the results (``--no-plots``: none): ``layer_speedup.png`` (the layer speedups, grouped by
workload and hidden size) and ``op_speedup.png`` (the fused op, time of torch eager / time).

Timing: warm-up calls, then ``--runs`` rounds (default 50) in which every implementation runs once in turn
(interleaved, so drifts of the machine hit all alike); the median of each is reported. CUDA times are CUDA
events around each call.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import Tensor, nn

from benchmarks.workloads import (
    EGNNLayer,
    Graph,
    bytes_moved,
    bytes_moved_backward,
    eager_layer,
    flops,
    make_graph,
    pyg_layer,
    write_results,
    zoo_layer,
)
from zoo.calculators.ase import frozen_parameters
from zoo.graph import AtomsGraph, from_ase, radius_graph
from zoo.kernels import message_aggregate, message_aggregate_reference, set_backend
from zoo.plots import ratio_bars
from zoo.registry import create_model

BASELINE = "pyg+torch_scatter"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fns: dict[str, Callable[[], object]], device: torch.device, runs: int, warmup: int, budget_s: float = float("inf")
) -> dict:
    """Median seconds per call of each function over interleaved rounds; failures are reported, not raised.

    A function whose timed calls have used up ``budget_s`` (after at least 5 of them) sits out the remaining
    rounds: its ``runs`` is then below ``runs``.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    errors: dict[str, str] = {}
    live = dict(fns)
    for _ in range(warmup):
        for name, fn in list(live.items()):
            try:
                fn()
            except (RuntimeError, ValueError, ImportError, torch.cuda.OutOfMemoryError) as error:
                errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                del live[name]
    _sync(device)
    for _ in range(runs):
        for name, fn in live.items():
            if len(times[name]) >= 5 and sum(times[name]) > budget_s:
                continue
            if device.type == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times[name].append(start.elapsed_time(stop) / 1e3)
            else:
                begin = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - begin)
    result = {name: {"median_s": statistics.median(t), "runs": len(t)} for name, t in times.items() if t}
    result.update({name: {"error": message} for name, message in errors.items()})
    return result


def copy_bandwidth(device: torch.device, runs: int) -> float:
    """Measured copy bandwidth in GB/s (bytes read + bytes written per second), median of ``runs`` copies."""
    numel = (2**29 if device.type == "cuda" else 2**26) // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    seconds = measure({"copy": lambda: dst.copy_(src)}, device, runs, 3)["copy"]["median_s"]
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def _layer_peers(layer: EGNNLayer, device: torch.device, heavy: bool) -> dict[str, Callable]:
    """name -> forward(h, graph) for every peer available here; ``heavy``: with the torch.compile peers and
    the Triton layer (whose two-layer kernel is slow)."""
    has_scatter = importlib.util.find_spec("torch_scatter") is not None
    peers: dict[str, Callable] = {"torch eager": eager_layer(layer)}
    pyg = pyg_layer(layer, use_torch_scatter=False)
    peers["pyg"] = lambda h, g: pyg(h, g.pos, g.edge_index)
    if has_scatter:
        pyg_scatter = pyg_layer(layer, use_torch_scatter=True)
        peers[BASELINE] = lambda h, g: pyg_scatter(h, g.pos, g.edge_index)
    if heavy:
        pyg_compiled = torch.compile(pyg_layer(layer, use_torch_scatter=False), dynamic=True)
        peers["pyg+compile"] = lambda h, g: pyg_compiled(h, g.pos, g.edge_index)
    peers["zoo torch"] = zoo_layer(layer, "torch")
    if heavy:
        peers["zoo compile"] = zoo_layer(layer, "compile")
    if heavy and device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        peers["zoo triton"] = zoo_layer(layer, "triton")
    if has_scatter:
        peers["zoo torch_scatter"] = zoo_layer(layer, "torch_scatter")
    return peers


def _compiles(hidden: int, args: argparse.Namespace) -> bool:
    """Whether the torch.compile peers (and the Triton layer) run at this hidden size: compiling is slow."""
    return not args.skip_compile and (args.compile_hidden is None or hidden in args.compile_hidden)


def bench_layer(graph: Graph, hidden: int, args: argparse.Namespace) -> list[dict]:
    """EGNN layer forward + backward for every peer on one graph and hidden size."""
    device = graph.pos.device
    torch.manual_seed(0)
    layer = EGNNLayer(hidden).to(device)
    h = torch.randn(graph.num_nodes, hidden, device=device, requires_grad=True)
    params = [h, *layer.parameters()]
    grad = torch.randn(graph.num_nodes, hidden, device=device)

    def step(forward: Callable) -> Callable[[], object]:
        return lambda: torch.autograd.grad(forward(h, graph), params, grad)

    peers = _layer_peers(layer, device, heavy=_compiles(hidden, args))
    timings = measure({name: step(fn) for name, fn in peers.items()}, device, args.runs, args.warmup, args.budget)
    baseline = BASELINE if "median_s" in timings.get(BASELINE, {}) else "pyg"
    base = timings.get(baseline, {}).get("median_s")
    rows = []
    for name, timing in timings.items():
        row = {"section": "layer", "workload": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges}
        row.update({"hidden": hidden, "impl": name, **timing})
        if "median_s" in timing and base:
            row["baseline"] = baseline
            row["speedup_vs_baseline"] = base / timing["median_s"]
        rows.append(row)
    return rows


def bench_op(
    graph: Graph, hidden: int, two_layer: bool, bandwidth: float, args: argparse.Namespace, backward: bool = False
) -> list[dict]:
    """Fused message passing alone: time, edges/s, GB/s and % of copy bandwidth. ``backward``: the input gradients
    (node and edge features, the MLP frozen: forces as the calculator takes them), timed on a kept forward graph."""
    device = graph.pos.device
    torch.manual_seed(0)
    layers = [nn.Linear(2 * hidden + 1, hidden), nn.SiLU()]
    if two_layer:
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    mlp = nn.Sequential(*layers).to(device).requires_grad_(False)
    h = torch.randn(graph.num_nodes, hidden, device=device, requires_grad=backward)
    edge_attr = torch.rand(graph.num_edges, 1, device=device, requires_grad=backward)
    fns: dict[str, Callable[[], Tensor]] = {
        "torch eager": lambda: message_aggregate_reference(h, graph.edge_index, edge_attr, mlp),
        "zoo torch": lambda: message_aggregate(h, graph.csr, edge_attr, mlp, backend="torch"),
    }
    if _compiles(hidden, args):
        fns["zoo compile"] = lambda: message_aggregate(h, graph.csr, edge_attr, mlp, backend="compile")
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        fns["zoo triton csr"] = lambda: message_aggregate(h, graph.csr, edge_attr, mlp, backend="triton")
        fns["zoo triton atomic"] = lambda: message_aggregate(
            h, graph.edge_index, edge_attr, mlp, backend="triton", layout="atomic"
        )
    if backward:
        grad = torch.randn(graph.num_nodes, hidden, device=device)

        def input_grads(forward: Callable[[], Tensor]) -> Callable[[], object]:
            out = forward()
            return lambda: torch.autograd.grad(out, [h, edge_attr], grad, retain_graph=True)

        fns = {name: input_grads(fn) for name, fn in fns.items()}
        timings = measure(fns, device, args.runs, args.warmup, args.budget)
        fns.clear()  # the kept forward graphs
    else:
        with torch.no_grad():
            timings = measure(fns, device, args.runs, args.warmup, args.budget)
    nbytes = (bytes_moved_backward if backward else bytes_moved)(graph, hidden, h.dtype, two_layer)
    work = flops(graph, hidden, two_layer) * (2 if backward else 1)
    rows = []
    for name, timing in timings.items():
        row = {"section": "op", "workload": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges}
        row.update({"hidden": hidden, "mlp_layers": 2 if two_layer else 1, "impl": name, **timing})
        row["pass"] = "backward" if backward else "forward"
        if "median_s" in timing:
            seconds = timing["median_s"]
            row["edges_per_s"] = graph.num_edges / seconds
            row["gbs"] = nbytes / seconds / 1e9
            row["pct_copy_bw"] = 100 * row["gbs"] / bandwidth
            row["tflops"] = work / seconds / 1e12
        rows.append(row)
    return rows


def bench_neighbors(name: str, args: argparse.Namespace) -> list[dict]:
    """vesin-torch neighbour list on CUDA against vesin (numpy) on CPU for one workload's positions."""
    import numpy as np
    import vesin
    from vesin_torch import NeighborList

    cpu_graph = make_graph(name, torch.device("cpu"))
    pos = cpu_graph.pos.double()
    length = float(torch.ceil(pos.max()))
    box = torch.eye(3, dtype=torch.float64) * length
    cutoff = 5.0
    gpu_pos, gpu_box = pos.cuda(), box.cuda()
    gpu_list = NeighborList(cutoff=cutoff, full_list=True)
    cpu_list = vesin.NeighborList(cutoff=cutoff, full_list=True)
    pos_np, box_np = pos.numpy(), box.numpy()
    fns = {
        "vesin cpu": lambda: cpu_list.compute(points=pos_np, box=box_np, periodic=True, quantities="ij"),
        "vesin-torch cuda": lambda: gpu_list.compute(gpu_pos, gpu_box, True, "ij"),
    }
    timings = measure(fns, torch.device("cuda"), max(5, args.runs // 5), 2)
    pairs = int(np.asarray(cpu_list.compute(points=pos_np, box=box_np, periodic=True, quantities="i")[0]).size)
    return [
        {"section": "neighbors", "workload": name, "nodes": pos.shape[0], "edges": pairs, "impl": impl, **t}
        for impl, t in timings.items()
    ]


def model_graph(num_atoms: int, device: torch.device, cutoff: float = 5.0) -> AtomsGraph:
    """A random periodic Cu/O box at the bulk workloads' density (0.05 per Å^3), with zoo's neighbour list."""
    rng = np.random.default_rng(0)
    length = (num_atoms / 0.05) ** (1 / 3)
    numbers = np.where(rng.uniform(size=num_atoms) < 0.8, 29, 8)
    atoms = Atoms(numbers=numbers, positions=rng.uniform(0.0, length, (num_atoms, 3)), cell=[length] * 3, pbc=True)
    return radius_graph(from_ase(atoms, dtype=torch.float32), cutoff).to(device)


def bench_model(num_atoms: int, hidden: int, args: argparse.Namespace) -> list[dict]:
    """The whole ``egnn-potential`` (4 layers, attention, cutoff envelope): energy + forces by autograd, and a
    training step on energy and forces (double backward), on the model's own code and on ``zoo.kernels``."""
    device = torch.device(args.device)
    graph = model_graph(num_atoms, device)
    torch.manual_seed(0)
    model = create_model("egnn-potential", hidden_nf=hidden, n_layers=4, cutoff=5.0, elements=[8, 29]).to(device)
    backends = [None, "torch"] + ([] if args.skip_compile else ["compile"])
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        backends.append("triton")  # gates and envelope weights fused; forces by the Triton backward kernel

    def predict(backend: str | None) -> Callable[[], object]:
        def run() -> object:  # as the ASE calculator / zoo.predict run it: eval mode, weights frozen for the call
            set_backend(model.eval(), backend)
            with frozen_parameters(model):
                return model(graph)["forces"]

        return run

    def train_step(backend: str | None) -> Callable[[], object]:
        def run() -> object:
            set_backend(model.train(), backend)
            out = model(graph)
            loss = out["energy"].square().mean() + out["forces"].square().mean()
            return torch.autograd.grad(loss, list(model.parameters()))

        return run

    rows = []
    for mode, make in (("energy + forces", predict), ("train step (forces loss)", train_step)):
        fns = {f"zoo {backend or 'own code'}": make(backend) for backend in backends}
        runs = args.runs if device.type == "cuda" else max(3, args.runs // 10)  # CPU: seconds per call
        timings = measure(fns, device, runs, min(args.warmup, 2), args.budget)
        base = timings["zoo own code"].get("median_s")
        for impl, timing in timings.items():
            row = {"section": "model", "model": "egnn-potential", "mode": mode, "impl": impl, "hidden": hidden}
            row.update(nodes=graph.pos.shape[0], edges=graph.edge_index.shape[1], **timing)
            if base and "median_s" in timing:
                row["speedup_vs_own_code"] = base / timing["median_s"]
            rows.append(row)
    set_backend(model, None)
    return rows


def check_determinism(graph: Graph, hidden: int, backend: str) -> dict:
    """CSR forward and all gradients computed twice: bitwise identical?"""
    device = graph.pos.device
    torch.manual_seed(0)
    layer = EGNNLayer(hidden).to(device)
    h = torch.randn(graph.num_nodes, hidden, device=device, requires_grad=True)
    forward = zoo_layer(layer, backend)
    results = []
    for _ in range(2):
        out = forward(h, graph)
        grads = torch.autograd.grad(out.square().sum(), [h, *layer.parameters()])
        results.append([out.detach(), *grads])
    same = all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    return {
        "section": "determinism",
        "workload": graph.name,
        "hidden": hidden,
        "impl": f"zoo {backend}",
        "bitwise": same,
    }


def _fmt(value: float, unit: str = "") -> str:
    if value >= 100:
        return f"{value:.0f}{unit}"
    if value >= 10:
        return f"{value:.1f}{unit}"
    return f"{value:.3g}{unit}"


def _ms(row: dict, runs: int) -> str:
    """Median in ms, with the run count when the time budget cut it short."""
    text = _fmt(row["median_s"] * 1e3)
    return text if row["runs"] >= runs else f"{text} ({row['runs']} runs)"


def markdown(results: dict) -> str:
    """The results as markdown tables."""
    lines = [
        f"# Message passing benchmark ({results['device_name']})",
        "",
        f"torch {results['torch']}, {results['threads']} threads, median of {results['runs']} interleaved runs "
        f"after {results['warmup']} warm-up; copy bandwidth {results['copy_gbs']:.1f} GB/s (read + write).",
        "",
        "## EGNN layer, forward + backward",
        "",
        f"speedup = time of `{BASELINE}` (`pyg` where torch-scatter is not installed) / time (higher is better)",
        "",
        "| workload | N | E | H | impl | ms | speedup |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in results["rows"]:
        if row["section"] != "layer":
            continue
        cells = [row["workload"], str(row["nodes"]), str(row["edges"]), str(row["hidden"]), row["impl"]]
        if "error" in row:
            cells += [row["error"][:60], "-"]
        else:
            speedup = row.get("speedup_vs_baseline")
            cells += [_ms(row, results["runs"]), "-" if speedup is None else f"{speedup:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    op_rows = [row for row in results["rows"] if row["section"] == "op"]
    if op_rows:
        lines += [
            "",
            "## Fused message passing",
            "",
            "GB/s: logical bytes (each gathered row counted every time it is read) / time; % = of copy bandwidth.",
            "backward: the input gradients with the MLP frozen (forces), on a kept forward graph.",
            "",
            "| workload | E | H | MLP layers | pass | impl | ms | Medges/s | GB/s | % copy BW | TFLOP/s |",
            "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in op_rows:
            cells = [row["workload"], str(row["edges"]), str(row["hidden"]), str(row["mlp_layers"])]
            cells += [row.get("pass", "forward"), row["impl"]]
            if "error" in row:
                cells += [row["error"][:60], "-", "-", "-", "-"]
            else:
                cells += [
                    _ms(row, results["runs"]),
                    _fmt(row["edges_per_s"] / 1e6),
                    _fmt(row["gbs"]),
                    _fmt(row["pct_copy_bw"], "%"),
                    _fmt(row["tflops"]),
                ]
            lines.append("| " + " | ".join(cells) + " |")
    neighbor_rows = [row for row in results["rows"] if row["section"] == "neighbors"]
    if neighbor_rows:
        lines += [
            "",
            "## Neighbour list (cutoff 5 Å)",
            "",
            "| workload | N | pairs | impl | ms |",
            "|---|---:|---:|---|---:|",
        ]
        for row in neighbor_rows:
            ms = row["error"][:60] if "error" in row else _fmt(row["median_s"] * 1e3)
            lines.append(f"| {row['workload']} | {row['nodes']} | {row['edges']} | {row['impl']} | {ms} |")
    model_rows = [row for row in results["rows"] if row["section"] == "model"]
    if model_rows:
        lines += [
            "",
            "## Whole model: egnn-potential (4 layers, attention, envelope), fused kernels vs its own code",
            "",
            "| N | E | H | mode | impl | ms | speedup |",
            "|---:|---:|---:|---|---|---:|---:|",
        ]
        for row in model_rows:
            ms = row["error"][:60] if "error" in row else _fmt(row["median_s"] * 1e3)
            speedup = row.get("speedup_vs_own_code")
            lines.append(
                f"| {row['nodes']} | {row['edges']} | {row['hidden']} | {row['mode']} | {row['impl']} | {ms} | "
                f"{'-' if speedup is None else f'{speedup:.2f}x'} |"
            )
    checks = [row for row in results["rows"] if row["section"] == "determinism"]
    if checks:
        lines += ["", "## Determinism (CSR, two runs compared bitwise)", "", "| workload | H | impl | bitwise |"]
        lines += ["|---|---:|---|---|"]
        lines += [f"| {r['workload']} | {r['hidden']} | {r['impl']} | {r['bitwise']} |" for r in checks]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> list[Path]:
    """Bar charts of the speedups: ``layer_speedup.png`` (over the PyG baseline) and ``op_speedup.png`` (over
    torch eager), one group of bars per workload and size, one bar per implementation; returns the files."""
    written = []
    layer: dict[str, dict[str, float]] = {}
    baselines = set()
    for row in results["rows"]:
        if row["section"] == "layer" and "speedup_vs_baseline" in row and row["impl"] != row["baseline"]:
            layer.setdefault(f"{row['workload']} H{row['hidden']}", {})[row["impl"]] = row["speedup_vs_baseline"]
            baselines.add(row["baseline"])
    if layer:
        path = out / "layer_speedup.png"
        title = f"EGNN layer forward + backward, {results['device_name']}"
        ratio_bars(layer, path, title=title, ylabel=f"speedup over {' / '.join(sorted(baselines))}")
        written.append(path)
    eager: dict[tuple, float] = {}
    for row in results["rows"]:
        if row["section"] == "op" and row["impl"] == "torch eager" and "median_s" in row:
            eager[(row["workload"], row["hidden"], row["mlp_layers"], row.get("pass", "forward"))] = row["median_s"]
    op: dict[str, dict[str, float]] = {}
    for row in results["rows"]:
        key = (row.get("workload"), row.get("hidden"), row.get("mlp_layers"), row.get("pass", "forward"))
        if row["section"] == "op" and row["impl"] != "torch eager" and "median_s" in row and key in eager:
            direction = "" if key[3] == "forward" else " bwd"
            group = f"{row['workload']} H{row['hidden']} {row['mlp_layers']}-layer{direction}"
            op.setdefault(group, {})[row["impl"]] = eager[key] / row["median_s"]
    if op:
        path = out / "op_speedup.png"
        title = f"fused message passing (bwd: input gradients), {results['device_name']}"
        ratio_bars(op, path, title=title, ylabel="speedup over torch eager")
        written.append(path)
    return written


def _defaults(device: torch.device, quick: bool) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(layer configurations, op configurations) as (workload, hidden) pairs."""
    if quick:
        return [("qm9", 64)], [("qm9", 64)]
    if device.type == "cuda":
        layer = [(w, h) for w in ("qm9", "oc20", "bulk-10k", "bulk-64k") for h in (64, 128, 256)]
        return layer, layer
    layer = [(w, h) for w in ("qm9", "oc20") for h in (64, 128, 256)] + [("bulk-10k", 128)]
    return layer, [("bulk-10k", 128)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--runs", type=int, default=50, help="timed rounds (default 50)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed calls per implementation and configuration, after which a slow one stops early "
        "(>= 5 runs); default: none on CPU, 10 on CUDA",
    )
    parser.add_argument("--workloads", nargs="*", help="restrict to these workloads")
    parser.add_argument("--hidden", nargs="*", type=int, help="restrict to these hidden sizes")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile peers")
    parser.add_argument(
        "--compile-hidden",
        nargs="*",
        type=int,
        help="run the torch.compile peers (and the Triton EGNN layer) only at these hidden sizes "
        "(default: all on CPU, 128 on CUDA)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU (default: PyTorch's choice)")
    parser.add_argument("--quick", action="store_true", help="one small configuration (smoke test)")
    parser.add_argument(
        "--skip-models", action="store_true", help="leave out the whole-model section (egnn-potential, 10k atoms)"
    )
    parser.add_argument(
        "--no-plots", dest="plots", action="store_false", help="do not write layer_speedup.png and op_speedup.png"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        args.compile_hidden = [128] if args.compile_hidden is None else args.compile_hidden
        args.budget = 10.0 if args.budget is None else args.budget
    elif args.budget is None:
        args.budget = float("inf")
    layer_configs, op_configs = _defaults(device, args.quick)

    def keep(config: tuple[str, int]) -> bool:
        return (not args.workloads or config[0] in args.workloads) and (not args.hidden or config[1] in args.hidden)

    results = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "warmup": args.warmup,
        "copy_gbs": copy_bandwidth(device, max(args.runs, 5)),
        "rows": [],
    }
    graphs: dict[str, Graph] = {}

    def graph(name: str) -> Graph:
        if name not in graphs:
            graphs[name] = make_graph(name, device)
        return graphs[name]

    def save() -> str:
        return write_results(args.out, results, markdown(results))

    for name, hidden in filter(keep, op_configs):
        for two_layer in (False, True):
            results["rows"] += bench_op(graph(name), hidden, two_layer, results["copy_gbs"], args)
            if hidden == 128:  # the input gradients (forces), at the size of the bar
                results["rows"] += bench_op(graph(name), hidden, two_layer, results["copy_gbs"], args, backward=True)
        save()
        print(f"op {name} H={hidden} done", flush=True)
    for name, hidden in filter(keep, layer_configs):
        results["rows"] += bench_layer(graph(name), hidden, args)
        save()
        print(f"layer {name} H={hidden} done", flush=True)
    if not args.skip_models:
        results["rows"] += bench_model(512 if args.quick else 10240, 64 if args.quick else 128, args)
        save()
        print("model done", flush=True)
    if device.type == "cuda" and not args.quick and importlib.util.find_spec("vesin_torch") is not None:
        for name in ("bulk-10k", "bulk-64k"):
            results["rows"] += bench_neighbors(name, args)
    backend = "triton" if device.type == "cuda" and importlib.util.find_spec("triton") else "torch"
    det_graph = "qm9" if args.quick else "bulk-10k"
    results["rows"].append(check_determinism(graph(det_graph), 64 if args.quick else 128, backend))
    print(save())
    if args.plots:
        print("plots: " + ", ".join(str(path) for path in plot(results, args.out)))
    return results


if __name__ == "__main__":
    main()
