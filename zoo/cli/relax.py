"""``zoo relax``: relax a structure (positions, optionally the cell) with a zoo potential and ASE."""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS

from zoo.calculators.ase import calculator

HELP = "relax a structure with a potential (ASE BFGS/FIRE; fixed atoms respected; --cell relaxes the cell)"
EXAMPLES = """  zoo relax slab.extxyz --model equiformer-v2-emt-demo --fmax 0.05 -o relaxed.extxyz
  zoo relax bulk.cif --model egnn-emt-demo --cell --optimizer FIRE --steps 500
"""
OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE, "LBFGS": LBFGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="structure file (last frame is used)")
    parser.add_argument("--model", required=True, help="model name, alias, hf-hub: spec or directory")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence in eV/Å (default 0.05)")
    parser.add_argument("--steps", type=int, default=500, help="maximum optimiser steps (default 500)")
    parser.add_argument("--cell", action="store_true", help="also relax the cell (FrechetCellFilter)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="BFGS")
    parser.add_argument("-o", "--output", type=Path, help="relaxed structure (default: <file>-relaxed.extxyz)")
    parser.add_argument("--trajectory", type=Path, help="ASE trajectory of the relaxation (.traj)")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "compile", "triton"),
        help="run the message passing through zoo.kernels (models with a fused path; default: the model's own code)",
    )


def run(args: argparse.Namespace) -> int:
    atoms = ase.io.read(args.file)
    atoms.calc = calculator(args.model, device=args.device, backend=args.backend)
    initial = atoms.get_potential_energy()
    target = FrechetCellFilter(atoms) if args.cell else atoms
    optimizer = OPTIMIZERS[args.optimizer](target, logfile=None, trajectory=args.trajectory and str(args.trajectory))
    converged = optimizer.run(fmax=args.fmax, steps=args.steps)
    final = atoms.get_potential_energy()
    fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    output = args.output or Path(args.file).with_name(Path(args.file).stem + "-relaxed.extxyz")
    ase.io.write(output, atoms)
    print(
        f"{'converged' if converged else 'NOT converged'} after {optimizer.nsteps} steps: "
        f"energy {initial:.6f} -> {final:.6f} eV ({final - initial:+.6f} eV), max force {fmax:.4f} eV/Å, "
        f"{len(atoms)} atoms -> {output}"
    )
    return 0 if converged else 1
