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
from zoo.datasets import MoleculeFileDataset
from zoo.graph import to_ase
from zoo.metrics.molecules import molecule_metrics, to_rdkit
from zoo.plots import bond_length_histograms, evenly_spaced, molecule_grid

HELP = "sample molecules from a generative model (EDM), write SDF/extxyz, plots, and print the metrics"
EXAMPLES = """  zoo sample edm-qm9 -n 1000 -o mols.sdf
  zoo sample edm-qm9 -n 100 --n-atoms 19 --seed 0 -o mols.extxyz --metrics-json metrics.json
  zoo sample edm-qm9 -n 500 -o mols.sdf --reference qm9-train.sdf   # bond lengths against the training set
  # plots: mols_grid.png (the first 48 molecules drawn) and mols_bond_lengths.png; --no-plots: none
"""
_REFERENCE_MAX = 2000  # reference molecules whose bond lengths are histogrammed (evenly spaced subset)


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
    parser.add_argument(
        "--reference",
        type=Path,
        help="molecules to compare bond lengths with, e.g. the training set (.sdf, .mol2 or any ASE format; "
        f"at most {_REFERENCE_MAX}, evenly spaced, are used)",
    )
    parser.add_argument(
        "--no-plots",
        dest="plots",
        action="store_false",
        help="do not write <output>_grid.png and <output>_bond_lengths.png",
    )


def _read_reference(path: Path) -> list[ase.Atoms]:
    """Up to ``_REFERENCE_MAX`` molecules of ``path`` (evenly spaced): RDKit for .sdf/.mol2, else ASE."""
    if path.suffix.lower() in (".sdf", ".mol2"):
        dataset = MoleculeFileDataset(path)
        return [to_ase(dataset[int(i)]) for i in evenly_spaced(len(dataset), _REFERENCE_MAX)]
    frames = ase.io.read(path, index=":")
    return [frames[int(i)] for i in evenly_spaced(len(frames), _REFERENCE_MAX)]


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
    if args.plots:
        stem = args.output.with_suffix("")
        grid, bonds = Path(f"{stem}_grid.png"), Path(f"{stem}_bond_lengths.png")
        molecule_grid(molecules, grid, bond_inference=args.bond_inference)
        reference = _read_reference(args.reference) if args.reference is not None else None
        bond_length_histograms(molecules, bonds, reference=reference)
        print(f"plots -> {grid}, {bonds}")
    return 0
