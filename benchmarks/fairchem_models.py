"""zoo against fairchem 1.10 on the fairchem models: one forward (energy and direct forces), same weights and inputs.

Run from the repository root with an interpreter that imports both zoo and fairchem-core 1.10 (fairchem pins
old dependencies, so it lives in its own venv; scripts/golden/make_fairchem_golden.py says how to make it)::

    /tmp/fcvenv/bin/python -m benchmarks.fairchem_models --device cpu --out out/bench-fairchem-cpu
    python -m benchmarks.fairchem_models --device cuda --out out/bench-fairchem-cuda

Models (``--models``): EquiformerV2 31M (OC20 All+MD configuration) and eSCN L4-M2-Lay12 and L6-M2-Lay12 (OC20
configurations). Each is fairchem's own module with its own random initialisation (float32), written as a
fairchem checkpoint and converted by zoo's ``fairchem`` converter, so both libraries run the same weights.

Input: OC20-like slabs, Cu(111) 4x4x5 with an O adsorbate (81 atoms, periodic in x and y), rattled, ``--batch``
of them per call (default 1 on CPU, 32 on CUDA); edges
from zoo's neighbour list (cutoff 12 Å, the 20 nearest per atom) given to both models (fairchem with
``otf_graph=False``, which then computes the edge vectors itself), so the neighbour search is not timed.

Timing: each model is called under ``torch.no_grad()`` as each library predicts (fairchem's ``forward``
re-enables autograd inside through ``conditional_grad``, as in its own predict loop); ``--warmup`` calls, then
``--runs`` rounds in which zoo and fairchem run in turn (interleaved), median per implementation; CUDA times are
CUDA events. Reported: milliseconds, ratio fairchem / zoo (> 1: zoo faster), atoms/s, peak CUDA memory, and
the output differences (zoo's deterministic edge frames against fairchem's random ones: ~1e-5 eV/Å).
``ratios.png`` beside ``results.json`` shows the ratio per model as bars (``--no-plots``: not written).
``--backends torch triton`` adds zoo with its SO(2) rotations on :mod:`zoo.kernels` (``set_backend``: fused
gather + rotation, rotation back + sum) to the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.build import add_adsorbate, fcc111
from torch_geometric.data import Batch, Data

from benchmarks.message_passing import measure
from benchmarks.workloads import write_results
from zoo.converters import convert
from zoo.graph import batch_graphs, from_ase, radius_graph
from zoo.plots import ratio_bars

CUTOFF, MAX_NEIGHBORS = 12.0, 20
EQV2_31M = dict(
    use_pbc=True,
    regress_forces=True,
    otf_graph=False,
    max_neighbors=MAX_NEIGHBORS,
    max_radius=CUTOFF,
    max_num_elements=90,
    num_layers=8,
    sphere_channels=128,
    attn_hidden_channels=64,
    num_heads=8,
    attn_alpha_channels=64,
    attn_value_channels=16,
    ffn_hidden_channels=128,
    norm_type="layer_norm_sh",
    lmax_list=[4],
    mmax_list=[2],
    grid_resolution=18,
    num_sphere_samples=128,
    edge_channels=128,
    use_atom_edge_embedding=True,
    distance_function="gaussian",
    attn_activation="silu",
    use_s2_act_attn=False,
    ffn_activation="silu",
    use_gate_act=False,
    use_grid_mlp=True,
    alpha_drop=0.1,
    drop_path_rate=0.1,
    proj_drop=0.0,
    weight_init="uniform",
)
ESCN_OC20 = dict(
    use_pbc=True,
    regress_forces=True,
    otf_graph=False,
    max_neighbors=MAX_NEIGHBORS,
    cutoff=CUTOFF,
    num_layers=12,
    sphere_channels=128,
    hidden_channels=256,
    lmax_list=[6],
    mmax_list=[2],
    num_sphere_samples=128,
    distance_function="gaussian",
    basis_width_scalar=2.0,
)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "equiformer_v2-31m": ("equiformer_v2", EQV2_31M),
    "escn-l4-m2-lay12": ("escn", {**ESCN_OC20, "lmax_list": [4]}),
    "escn-l6-m2-lay12": ("escn", ESCN_OC20),
}


def slab(seed: int = 0) -> Any:
    """Cu(111) 4x4x5 + O in an fcc hollow, 81 atoms, periodic in x and y, rattled (no neighbour ties)."""
    atoms = fcc111("Cu", size=(4, 4, 5), vacuum=8.0)
    add_adsorbate(atoms, "O", 1.5, "fcc")
    atoms.rattle(0.05, seed=seed)
    atoms.pbc = (True, True, False)
    return atoms


def fairchem_module(kind: str, attributes: dict[str, Any]) -> torch.nn.Module:
    """fairchem's monolithic EquiformerV2 or eSCN (imported here: fairchem is not a zoo dependency)."""
    logging.disable(logging.WARNING)
    if kind == "equiformer_v2":
        from fairchem.core.models.equiformer_v2.equiformer_v2_deprecated import EquiformerV2

        return EquiformerV2(**attributes)
    from fairchem.core.models.escn.escn import eSCN

    return eSCN(**attributes)


def build_pair(kind: str, attributes: dict[str, Any], seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(fairchem model, zoo model)`` with the same weights, in eval mode, float32, on the CPU."""
    torch.manual_seed(seed)
    reference = fairchem_module(kind, attributes).eval()
    checkpoint = {
        "state_dict": {f"module.{key}": value for key, value in reference.state_dict().items()},
        "config": {"model": kind, "model_attributes": attributes},
        "normalizers": {},
        "ema": None,
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        torch.save(checkpoint, path)
        model = convert("fairchem", path)
    return reference, model


def inputs(device: torch.device, batch: int = 1) -> tuple[Batch, Any]:
    """``batch`` slabs (rattled with seeds 0, 1, ...) as fairchem's batch (with zoo's edges) and as zoo's batched
    graph, on ``device``, float32."""
    graphs, data = [], []
    for seed in range(batch):
        graph = radius_graph(from_ase(slab(seed), dtype=torch.float32), CUTOFF, max_neighbors=MAX_NEIGHBORS)
        graphs.append(graph)
        data.append(
            Data(
                pos=graph.pos,
                atomic_numbers=graph.z,
                cell=graph.cell,
                natoms=torch.tensor([graph.pos.shape[0]]),
                pbc=graph.pbc,
                edge_index=graph.edge_index,
                cell_offsets=graph.edge_shift.to(torch.float32),
                neighbors=torch.tensor([graph.edge_index.shape[1]]),
            )
        )
    zoo_graph = graphs[0] if batch == 1 else batch_graphs(graphs)
    return Batch.from_data_list(data).to(device), zoo_graph.to(device)


def _call(model: torch.nn.Module, data: Any, backend: str | None = None) -> Callable[[], dict[str, torch.Tensor]]:
    """One no-grad forward; for a zoo model, with its SO(2) rotations on ``backend`` (``None``: its own code)."""

    def forward() -> dict[str, torch.Tensor]:
        if hasattr(model, "set_backend"):
            model.set_backend(backend)
        with torch.no_grad():
            return model(data)

    return forward


def peak_memory(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory of one call in MiB (``None`` on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time zoo and fairchem on one model; return one result row."""
    kind, attributes = MODELS[name]
    reference, model = build_pair(kind, attributes, args.seed)
    reference, model = reference.to(device), model.to(device)
    data, graph = inputs(device, args.batch)
    fns = {"zoo": _call(model, graph), "fairchem": _call(reference, data)}
    fns.update({f"zoo[{backend}]": _call(model, graph, backend) for backend in args.backends})
    expected, out = fns["fairchem"](), fns["zoo"]()
    variants = {impl: fns[impl]() for impl in fns if impl.startswith("zoo[")}
    timings = measure(fns, device, args.runs, args.warmup)
    row: dict[str, Any] = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "structures": args.batch,
        "atoms": int(graph.pos.shape[0]),
        "edges": int(graph.edge_index.shape[1]),
        "energy_abs_diff": (out["energy"] - expected["energy"].reshape(-1)).abs().max().item(),
        "forces_max_abs_diff": (out["forces"] - expected["forces"]).abs().max().item(),
        "forces_max_abs": expected["forces"].abs().max().item(),
        "timings": timings,
        "peak_mib": {impl: peak_memory(fn, device) for impl, fn in fns.items()},
    }
    if all("median_s" in timings[impl] for impl in ("zoo", "fairchem")):
        row["ratio_fairchem_over_zoo"] = timings["fairchem"]["median_s"] / timings["zoo"]["median_s"]
    row["backends"] = {
        impl: {
            "ratio_fairchem_over": timings["fairchem"].get("median_s", float("nan"))
            / timings[impl].get("median_s", float("nan")),
            "forces_max_abs_diff_vs_zoo": (result["forces"] - out["forces"]).abs().max().item(),
        }
        for impl, result in variants.items()
    }
    return row


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table."""
    lines = [
        f"# zoo vs fairchem {results['fairchem']}: forward (energy + direct forces), {results['device_name']}",
        "",
        f"torch {results['torch']}, {results['threads']} threads, float32, median of {results['runs']} runs after "
        f"{results['warmup']} warm-up calls, {results.get('batch', 1)} slab(s) per call. "
        "Ratio = fairchem time / zoo time (> 1: zoo is faster).",
        "",
        "| model | params | atoms | edges | zoo ms | fairchem ms | ratio | zoo atoms/s | peak MiB zoo / fairchem "
        "| max abs dF / max abs F (eV/Å) | abs dE (eV) | zoo on the SO(2) kernels: ms (ratio) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        times = {impl: row["timings"][impl].get("median_s") for impl in ("zoo", "fairchem")}
        ms = {impl: f"{1e3 * t:.1f}" if t else row["timings"][impl].get("error", "-") for impl, t in times.items()}
        ratio = f"{row['ratio_fairchem_over_zoo']:.2f}" if "ratio_fairchem_over_zoo" in row else "-"
        rate = f"{row['atoms'] / times['zoo']:.0f}" if times["zoo"] else "-"
        peak = row["peak_mib"]
        memory = f"{peak['zoo']:.0f} / {peak['fairchem']:.0f}" if peak["zoo"] is not None else "-"
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['atoms']} | {row['edges']} | {ms['zoo']} | "
            f"{ms['fairchem']} | {ratio} | {rate} | {memory} | "
            f"{row['forces_max_abs_diff']:.1e} / {row['forces_max_abs']:.1e} | "
            f"{row['energy_abs_diff']:.2e} | {_variants(row)} |"
        )
    return "\n".join(lines) + "\n"


def _variants(row: dict[str, Any]) -> str:
    cells = []
    for impl, numbers in row.get("backends", {}).items():
        median = row["timings"][impl].get("median_s")
        time = f"{1e3 * median:.1f}" if median else row["timings"][impl].get("error", "-")
        cells.append(f"{impl} {time} ({numbers['ratio_fairchem_over']:.2f})")
    return ", ".join(cells) or "-"


def plot(results: dict[str, Any], out: Path) -> Path:
    """``out/ratios.png``: fairchem time / zoo time per model (bars above 1: zoo is faster)."""
    ratios = {
        row["model"]: {
            "fairchem / zoo": row.get("ratio_fairchem_over_zoo"),
            **{f"fairchem / {impl}": v["ratio_fairchem_over"] for impl, v in row.get("backends", {}).items()},
        }
        for row in results["rows"]
    }
    title = f"zoo vs fairchem {results['fairchem']}, forward, {results['device_name']}"
    path = out / "ratios.png"
    ratio_bars(ratios, path, title=title, ylabel="fairchem time / zoo time")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--runs", type=int, default=None, help="timed rounds (default: 5 on CPU, 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (default: 2 on CPU, 5 on CUDA)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random weights")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="slabs per call (default: 1 on CPU; 32 on CUDA, 2,592 atoms: one slab leaves a GPU idle)",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="do not write ratios.png")
    parser.add_argument(
        "--backends",
        nargs="*",
        default=[],
        choices=["auto", "torch", "triton"],
        help="also time zoo with its SO(2) rotations on these zoo.kernels backends (set_backend), same run",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.runs = args.runs or (50 if cuda else 5)
    args.warmup = args.warmup or (5 if cuda else 2)
    args.batch = args.batch or (32 if cuda else 1)
    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    args.out.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    results: dict[str, Any] = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "fairchem": version("fairchem-core"),
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "warmup": args.warmup,
        "batch": args.batch,
        "rows": [],
    }
    for name in args.models:
        row = bench_model(name, args, device)
        results["rows"].append(row)
        print(
            f"{name:20s} zoo {1e3 * row['timings']['zoo'].get('median_s', float('nan')):9.1f} ms   "
            f"fairchem {1e3 * row['timings']['fairchem'].get('median_s', float('nan')):9.1f} ms   "
            f"ratio {row.get('ratio_fairchem_over_zoo', float('nan')):.2f}   "
            f"max|dF| {row['forces_max_abs_diff']:.1e} eV/A",
            flush=True,
        )
    print(write_results(args.out, results, markdown(results)))
    if args.plots:
        print(f"plot: {plot(results, args.out)}")
    return results


if __name__ == "__main__":
    main()
