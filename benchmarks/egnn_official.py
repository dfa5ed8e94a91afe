"""zoo's ``egnn-qm9`` against the official EGNN code (vgsatorras/egnn, ``qm9/models.py``), same weights: the
prediction and its gradient with respect to the positions ("forces"), on a batch of QM9-sized molecules.

    python -m benchmarks.egnn_official /tmp/egnn_official --device cpu --out out/bench-egnn-official
    python -m benchmarks.egnn_official /tmp/egnn_official --device cuda --out out/gpu/egnn-official

The official modules are imported from a checkout (or ``git archive``) given on the command line; nothing of
them is copied into zoo. The model is the paper's QM9 network as ``main_qm9.py`` builds it (7 layers, 128
features, attention, SiLU, ``node_attr=0``); zoo's ``egnn-qm9`` loads the official ``state_dict`` with
``strict=True``. Inputs: ``--batch`` molecules (default 96, the official batch size) of 9 to 29 atoms (H, C, N,
O, F in QM9's proportions, random positions with atoms at least 0.9 Å apart), given to the official model as
``main_qm9.py`` does (padded to the largest molecule, complete graph with self-pairs, atom and edge masks,
``preprocess_input`` features) and to zoo as a batch of graphs (each molecule's complete graph, no padding).

Timed (median of ``--runs`` interleaved rounds after ``--warmup``; CUDA: CUDA events): prediction + forces
(``autograd.grad`` of the summed prediction), for the official code, zoo's own code and zoo on the fused kernels
(``--backends``, default ``torch`` and ``compile``, plus ``triton`` on CUDA; a backend that cannot run is reported
as not run). Reported: ms, ratio official / zoo
(> 1: zoo faster), and the largest differences of predictions and forces from the official ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.message_passing import measure
from benchmarks.workloads import write_results
from zoo import create_model
from zoo.graph import AtomsGraph, batch_graphs
from zoo.kernels import KernelError, set_backend

SPECIES = (1, 6, 7, 8, 9)
QM9_FRACTIONS = (0.51, 0.35, 0.056, 0.078, 0.006)  # atoms of QM9 by element (H, C, N, O, F), rounded


def molecules(batch: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``batch`` random QM9-sized molecules: (atomic numbers, positions in Å), atoms at least 0.9 Å apart."""
    rng = np.random.default_rng(seed)
    fractions = np.array(QM9_FRACTIONS) / sum(QM9_FRACTIONS)
    out = []
    for _ in range(batch):
        size = int(rng.integers(9, 30))
        numbers = rng.choice(SPECIES, size=size, p=fractions)
        points: list[np.ndarray] = []
        while len(points) < size:  # rejection sampling in a ball of QM9's size
            candidate = rng.normal(0.0, 1.6, 3)
            if all(np.linalg.norm(candidate - p) >= 0.9 for p in points):
                points.append(candidate)
        out.append((numbers, np.array(points)))
    return out


def official_inputs(mols: list[tuple[np.ndarray, np.ndarray]], qm9_utils: Any, device: torch.device) -> dict:
    """The official model's inputs as ``main_qm9.py`` builds them (qm9/data/collate.py masks, utils.py features)."""
    n_nodes = max(len(numbers) for numbers, _ in mols)
    batch = len(mols)
    charges = torch.zeros(batch, n_nodes)
    positions = torch.zeros(batch, n_nodes, 3)
    for index, (numbers, pos) in enumerate(mols):
        charges[index, : len(numbers)] = torch.as_tensor(numbers, dtype=torch.float32)
        positions[index, : len(numbers)] = torch.as_tensor(pos, dtype=torch.float32)
    atom_mask = charges > 0
    edge_mask = atom_mask.unsqueeze(1) * atom_mask.unsqueeze(2)
    edge_mask *= ~torch.eye(n_nodes, dtype=torch.bool).unsqueeze(0)
    one_hot = charges.unsqueeze(-1) == torch.tensor(SPECIES, dtype=torch.float32).view(1, 1, -1)
    nodes = qm9_utils.preprocess_input(one_hot.float(), charges, 2, max(SPECIES), "cpu").view(batch * n_nodes, -1)
    edges = qm9_utils.get_adj_matrix(n_nodes, batch, "cpu")
    return {
        "h0": nodes.to(device),
        "positions": positions.view(batch * n_nodes, 3).to(device),
        "edges": [e.to(device) for e in edges],
        "node_mask": atom_mask.view(batch * n_nodes, 1).float().to(device),
        "edge_mask": edge_mask.view(batch * n_nodes * n_nodes, 1).float().to(device),
        "n_nodes": n_nodes,
        "atom_mask": atom_mask.view(-1).to(device),
    }


def _official_call(model: torch.nn.Module, inputs: dict) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs["positions"].clone().requires_grad_()
        pred = model(
            h0=inputs["h0"],
            x=x,
            edges=inputs["edges"],
            edge_attr=None,
            node_mask=inputs["node_mask"],
            edge_mask=inputs["edge_mask"],
            n_nodes=inputs["n_nodes"],
        )
        (grad,) = torch.autograd.grad(pred.sum(), x)
        return pred.detach(), -grad[inputs["atom_mask"]]

    return run


def _zoo_call(model: torch.nn.Module, graph: Any, backend: str | None) -> Callable[[], tuple[torch.Tensor, ...]]:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        set_backend(model, backend)
        graph.pos.requires_grad_(True)
        pred = model(graph)[model.target]
        (grad,) = torch.autograd.grad(pred.sum(), graph.pos)
        graph.pos.requires_grad_(False)
        return pred.detach(), -grad

    return run


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(args.checkout).resolve()))
    from qm9 import models as qm9_models
    from qm9 import utils as qm9_utils

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    official = qm9_models.EGNN(
        in_node_nf=15, in_edge_nf=0, hidden_nf=args.hidden, n_layers=args.layers, coords_weight=1.0, attention=1,
        node_attr=0, device="cpu",
    ).eval()  # fmt: skip
    model = create_model("egnn-qm9", hidden_nf=args.hidden, n_layers=args.layers).eval()
    model.load_state_dict(official.state_dict(), strict=True)
    official, model = official.to(device), model.to(device)
    mols = molecules(args.batch, args.seed)
    inputs = official_inputs(mols, qm9_utils, device)
    graph = batch_graphs(
        [AtomsGraph.build(torch.as_tensor(pos, dtype=torch.float32), torch.as_tensor(z)) for z, pos in mols]
    ).to(device)
    fns = {"official": _official_call(official, inputs), "zoo own code": _zoo_call(model, graph, None)}
    fns.update({f"zoo {backend}": _zoo_call(model, graph, backend) for backend in args.backends})
    want_pred, want_forces = fns["official"]()
    checks, skipped = {}, {}
    for impl, fn in list(fns.items()):
        try:
            pred, forces = fn()
        except KernelError as error:  # a backend this model or machine cannot use (Triton without CUDA)
            skipped[impl] = str(error)
            del fns[impl]
            continue
        checks[impl] = {
            "pred_max_abs_diff": (pred.reshape(-1) - want_pred.reshape(-1)).abs().max().item(),
            "forces_max_abs_diff": (forces - want_forces).abs().max().item(),
        }
    timings = measure(fns, device, args.runs, args.warmup)
    set_backend(model, None)
    base = timings["official"].get("median_s")
    rows = []
    for impl, timing in timings.items():
        row = {"impl": impl, **timing, **checks[impl]}
        if base and "median_s" in timing:
            row["ratio_official_over"] = base / timing["median_s"]
        rows.append(row)
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "molecules": args.batch,
        "atoms": int(graph.pos.shape[0]),
        "padded_atoms": int(inputs["positions"].shape[0]),
        "edges": sum(len(z) * (len(z) - 1) for z, _ in mols),
        "hidden": args.hidden,
        "layers": args.layers,
        "runs": args.runs,
        "warmup": args.warmup,
        "max_forces": want_forces.abs().max().item(),
        "rows": rows,
        "skipped": skipped,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# egnn-qm9: zoo vs the official EGNN code, prediction + forces ({results['device_name']})",
        "",
        f"torch {results['torch']}, {results['threads']} threads, float32, {results['molecules']} molecules "
        f"({results['atoms']} atoms, {results['edges']} edges; {results['padded_atoms']} padded atoms for the official "
        f"code), H = {results['hidden']}, "
        f"{results['layers']} layers, median of {results['runs']} interleaved rounds after {results['warmup']} "
        "warm-up. Ratio = official time / time (> 1: faster than the official code).",
        "",
        "| implementation | ms | ratio | max abs d(prediction) | max abs d(forces) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        ms = f"{1e3 * row['median_s']:.2f}" if "median_s" in row else row.get("error", "-")
        ratio = f"{row['ratio_official_over']:.2f}x" if "ratio_official_over" in row else "-"
        lines.append(
            f"| {row['impl']} | {ms} | {ratio} | {row['pred_max_abs_diff']:.1e} | {row['forces_max_abs_diff']:.1e} |"
        )
    lines += ["", f"Largest force component of the official model: {results['max_forces']:.2e}."]
    lines += [f"Not run: {impl}: {why}" for impl, why in results.get("skipped", {}).items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a checkout (or git archive) of vgsatorras/egnn")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--batch", type=int, default=96, help="molecules per call (default 96, main_qm9.py's)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--runs", type=int, default=None, help="timed rounds (default: 10 on CPU, 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default: 2 on CPU, 5 on CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="*", default=None, help="zoo.kernels backends (default: torch compile,"
                        " and triton on CUDA)")  # fmt: skip
    args = parser.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    args.runs = args.runs or (50 if cuda else 10)
    args.warmup = args.warmup or (5 if cuda else 2)
    if args.backends is None:
        args.backends = ["torch", "compile"] + (["triton"] if cuda else [])
    if not (args.checkout / "qm9" / "models.py").exists():
        parser.error(f"{args.checkout} is not a checkout of vgsatorras/egnn (no qm9/models.py)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args)
    print(write_results(args.out, results, markdown(results)))
    return results


if __name__ == "__main__":
    main()
