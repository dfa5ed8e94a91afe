"""``zoo sample``: draw molecules from a generative model, write them, and report their quality metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from zoo.api import load
from zoo.metrics.molecules import molecule_metrics, to_rdkit

HELP = "sample molecules from a generative model (EDM), write SDF/extxyz and print the metrics"
EXAMPLES = """  zoo sample edm-qm9 -n 1000 -o mols.sdf
  zoo sample edm-qm9 -n 100 --n-atoms 19 --seed 0 -o mols.extxyz --metrics-json metrics.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="generative model: name, alias, hf-hub: spec or directory")
    parser.add_argument("-n", type=int, default=100, help="number of molecules (default 100)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help=".sdf (bonds from EDM's table) or any ASE format"
    )
    parser.add_argument("--n-atoms", type=int, help="atoms per molecule (default: the training histogram)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100, help="molecules denoised together")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--bond-inference", choices=("edm-table", "rdkit"), default="edm-table")
    parser.add_argument("--metrics-json", type=Path, help="also write the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    model = load(args.model, device=args.device)
    if model.metadata.get("task") != "generative" or not hasattr(model, "sample"):
        raise ValueError(f"{args.model} is a {model.metadata.get('task')} model: zoo sample needs a generative one")
    molecules: list[ase.Atoms] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("sampling", total=args.n)
        while len(molecules) < args.n:
            count = min(args.batch_size, args.n - len(molecules))
            molecules += model.sample(count, n_atoms=args.n_atoms, seed=args.seed + len(molecules), batch_size=count)
            progress.update(task, completed=len(molecules))
    if args.output.suffix == ".sdf":
        from rdkit import Chem

        with Chem.SDWriter(str(args.output)) as writer:
            for molecule in molecules:
                writer.write(to_rdkit(molecule, args.bond_inference))
    else:
        ase.io.write(args.output, molecules)
    metrics = molecule_metrics(molecules, bond_inference=args.bond_inference)
    table = Table("metric", "value", title=f"{len(molecules)} molecules -> {args.output}")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if args.metrics_json:
        args.metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    return 0
