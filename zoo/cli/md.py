"""``zoo md``: molecular dynamics with a zoo potential (NVE velocity Verlet or NVT Langevin)."""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

from zoo.calculators.ase import calculator

HELP = "run molecular dynamics with a potential (NVE or NVT Langevin), writing a trajectory and a log"
EXAMPLES = """  zoo md bulk.extxyz --model egnn-emt-demo --ensemble nve --T 300 --dt 1 --steps 1000
  zoo md slab.extxyz --model egnn-emt-demo --ensemble nvt-langevin --T 500 --friction 0.01 -o hot.traj
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="structure file (last frame is used)")
    parser.add_argument("--model", required=True, help="model name, alias, hf-hub: spec or directory")
    parser.add_argument("--ensemble", choices=("nve", "nvt-langevin"), default="nve")
    parser.add_argument("--T", dest="temperature", type=float, default=300.0, help="temperature in K (default 300)")
    parser.add_argument("--dt", type=float, default=1.0, help="time step in fs (default 1)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    parser.add_argument("--interval", type=int, default=10, help="write every this many steps (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat")
    parser.add_argument("-o", "--output", type=Path, default=Path("md.traj"), help="trajectory (default md.traj)")
    parser.add_argument("--log", type=Path, help="log file (default: <output>.log)")
    parser.add_argument("--device", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    atoms = ase.io.read(args.file)
    atoms.calc = calculator(args.model, device=args.device)
    rng = np.random.default_rng(args.seed)
    if not atoms.get_momenta().any():
        scale = np.sqrt(args.temperature * units.kB / atoms.get_masses())[:, None]  # Maxwell-Boltzmann
        atoms.set_velocities(scale * rng.normal(size=(len(atoms), 3)))
    timestep = args.dt * units.fs
    log = args.log or args.output.with_suffix(".log")
    if args.ensemble == "nve":
        dynamics = VelocityVerlet(atoms, timestep=timestep, logfile=str(log))
    else:
        dynamics = Langevin(
            atoms,
            timestep=timestep,
            temperature_K=args.temperature,
            friction=args.friction / units.fs,
            fixcm=False,
            logfile=str(log),
            rng=rng,
        )
    totals: list[float] = []
    temperatures: list[float] = []

    def record() -> None:
        totals.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    with Trajectory(str(args.output), "w", atoms) as trajectory:
        dynamics.attach(trajectory.write, interval=args.interval)
        dynamics.attach(record, interval=args.interval)
        dynamics.run(args.steps)
    drift = (totals[-1] - totals[0]) / len(atoms)
    print(
        f"{args.ensemble}: {args.steps} steps of {args.dt} fs, {len(atoms)} atoms; "
        f"mean T {np.mean(temperatures):.1f} K; total energy drift {drift:+.2e} eV/atom; "
        f"trajectory -> {args.output}, log -> {log}"
    )
    return 0
