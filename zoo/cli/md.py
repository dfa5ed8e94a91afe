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
from zoo.plots import md_traces

HELP = "run molecular dynamics with a potential (NVE or NVT Langevin), writing a trajectory, a log and a plot"
EXAMPLES = """  zoo md bulk.extxyz --model egnn-emt-demo --ensemble nve --T 300 --dt 1 --steps 1000
  zoo md slab.extxyz --model egnn-emt-demo --ensemble nvt-langevin --T 500 --friction 0.01 -o hot.traj
  # writes hot.traj, hot.log and hot.png (energies and temperature against time; --no-plots: no PNG)
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
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "compile", "triton"),
        help="run the message passing through zoo.kernels (models with a fused path; default: the model's own code)",
    )
    parser.add_argument(
        "--no-plots",
        dest="plots",
        action="store_false",
        help="do not write <output>.png (energies and temperature against time)",
    )


def run(args: argparse.Namespace) -> int:
    atoms = ase.io.read(args.file)
    atoms.calc = calculator(args.model, device=args.device, backend=args.backend)
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
    trace: dict[str, list[float]] = {"time_fs": [], "potential": [], "kinetic": [], "temperature": []}

    def record() -> None:
        trace["time_fs"].append(dynamics.get_time() / units.fs)
        trace["potential"].append(atoms.get_potential_energy())
        trace["kinetic"].append(atoms.get_kinetic_energy())
        trace["temperature"].append(atoms.get_temperature())

    with Trajectory(str(args.output), "w", atoms) as trajectory:
        dynamics.attach(trajectory.write, interval=args.interval)
        dynamics.attach(record, interval=args.interval)
        dynamics.run(args.steps)
    totals = np.add(trace["potential"], trace["kinetic"])
    drift = (totals[-1] - totals[0]) / len(atoms)
    written = f"trajectory -> {args.output}, log -> {log}"
    if args.plots:
        plot = args.output.with_suffix(".png")
        md_traces(
            **trace,
            path=plot,
            n_atoms=len(atoms),
            target_temperature=args.temperature if args.ensemble == "nvt-langevin" else None,
            title=f"{args.ensemble}, {len(atoms)} atoms, dt {args.dt} fs, {args.model}",
        )
        written += f", plot -> {plot}"
    print(
        f"{args.ensemble}: {args.steps} steps of {args.dt} fs, {len(atoms)} atoms; "
        f"mean T {np.mean(trace['temperature']):.1f} K; total energy drift {drift:+.2e} eV/atom; {written}"
    )
    return 0
