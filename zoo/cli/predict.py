"""``zoo predict``: energies, forces and stress of many structures in batches, written with ASE."""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.db
import ase.io
from ase.calculators.singlepoint import SinglePointCalculator
from rich.progress import Progress

from zoo.api import load
from zoo.calculators.predict import iter_structures, predict

HELP = "predict energies/forces/stress of structure files with a potential"
EXAMPLES = """  zoo predict structures.extxyz --model egnn-emt-demo -o predicted.extxyz
  zoo predict a.cif b.xyz 'traj.traj' --model equiformer-oc20 --max-atoms 4000 --device cuda -o out.db
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="structure files (any format ase.io reads; all frames)")
    parser.add_argument("--model", required=True, help="model name, alias, hf-hub: spec or directory")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output .extxyz (or any ase format) or .db")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--batch-size", type=int, help="structures per batch (default 32)")
    group.add_argument("--max-atoms", type=int, help="atoms per batch")
    parser.add_argument("--device", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "compile", "triton"),
        help="run the message passing through zoo.kernels (models with a fused path; default: the model's own code)",
    )
    parser.add_argument("--no-stress", action="store_true", help="skip stress")


def run(args: argparse.Namespace) -> int:
    structures = [atoms for atoms in iter_structures(args.files)]
    model = load(args.model, device=args.device, backend=args.backend)
    with Progress(transient=True) as progress:
        task = progress.add_task("predicting", total=len(structures))
        results = predict(
            model,
            structures,
            batch_size=args.batch_size,
            max_atoms=args.max_atoms,
            stress=not args.no_stress,
            progress=lambda done: progress.update(task, completed=done),
        )
    for atoms, result in zip(structures, results, strict=True):
        atoms.calc = SinglePointCalculator(atoms, **result)
    if args.output.suffix == ".db":
        with ase.db.connect(args.output) as database:
            for atoms in structures:
                database.write(atoms)
    else:
        ase.io.write(args.output, structures)
    print(f"{len(structures)} structures -> {args.output}")
    return 0
