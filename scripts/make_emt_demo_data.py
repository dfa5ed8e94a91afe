"""Generate the EMT data set of the embedded demo potential (toy data: ASE's EMT, not DFT).

Bulk fcc metals and random alloys (Cu, Ag, Au, Ni, Pd, Pt, Al) strained and rattled, fcc(111)/(100) slabs
with H/C/N/O adsorbates, and frames along short BFGS relaxations; labelled with EMT energy, forces and stress.
Structures with a force component above 15 eV/Å are discarded. Deterministic from ``--seed``.
Writes ``train.extxyz``, ``val.extxyz`` and ``test.extxyz`` (80/10/10).

    python scripts/make_emt_demo_data.py --out data/emt-demo --num 3000 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.optimize import BFGS

METALS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
ADSORBATES = ("H", "C", "N", "O")


def labelled(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` with EMT energy, forces and (if periodic in 3D) stress attached."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def bulk_sample(rng: np.random.Generator) -> Atoms:
    metal = rng.choice(METALS)
    atoms = bulk(metal, "fcc", cubic=bool(rng.random() < 0.5)).repeat(2)
    if rng.random() < 0.5:  # random alloy
        others = rng.choice(METALS, size=len(atoms))
        swap = rng.random(len(atoms)) < 0.3
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[swap] = others[swap]
        atoms.set_chemical_symbols(symbols.tolist())
    strain = np.eye(3) + rng.normal(scale=0.02, size=(3, 3))
    atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
    atoms.rattle(stdev=rng.uniform(0.02, 0.15), seed=int(rng.integers(2**31)))
    return atoms


def slab_sample(rng: np.random.Generator) -> Atoms:
    metal = str(rng.choice(METALS))
    build = fcc111 if rng.random() < 0.6 else fcc100
    slab = build(metal, size=(2, 2, 3), vacuum=6.0)
    slab.pbc = (True, True, False)
    for _ in range(int(rng.integers(0, 3))):
        site = "ontop" if build is fcc100 else str(rng.choice(["ontop", "fcc", "hcp", "bridge"]))
        add_adsorbate(
            slab, str(rng.choice(ADSORBATES)), float(rng.uniform(1.0, 2.0)), site, offset=tuple(rng.integers(0, 2, 2))
        )
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    slab.rattle(stdev=rng.uniform(0.02, 0.1), seed=int(rng.integers(2**31)))
    return slab


def relaxation_frames(atoms: Atoms, steps: int) -> list[Atoms]:
    """Frames along a short BFGS relaxation under EMT (the relaxed-frame part of the data set)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    frames: list[Atoms] = []
    optimizer = BFGS(atoms, logfile=None)
    optimizer.attach(lambda: frames.append(labelled(atoms)), interval=max(1, steps // 3))
    optimizer.run(fmax=0.05, steps=steps)
    return frames


MAX_FORCE = 15.0  # eV/Å: rattled adsorbates too close to the surface are discarded, not learnt


def generate(num: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    structures: list[Atoms] = []
    while len(structures) < num:
        kind = rng.random()
        if kind < 0.45:
            batch = [labelled(bulk_sample(rng))]
        elif kind < 0.85:
            batch = [labelled(slab_sample(rng))]
        else:
            batch = relaxation_frames(slab_sample(rng), steps=int(rng.integers(3, 12)))
        structures.extend(a for a in batch if np.abs(a.get_forces()).max() <= MAX_FORCE)
    return structures[:num]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    structures = generate(args.num, args.seed)
    order = np.random.default_rng(args.seed + 1).permutation(len(structures))
    n_val = n_test = len(structures) // 10
    splits = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, index in splits.items():
        ase.io.write(args.out / f"{name}.extxyz", [structures[i] for i in index])
        print(f"{name}: {len(index)} structures")


if __name__ == "__main__":
    main()
