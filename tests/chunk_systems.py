"""The three structures the edge-chunking tests run on: a periodic alloy, a slab with an adsorbate, a molecule
(rattled, deterministic), shared by tests/calculators/test_chunked.py and tests/models/test_chunked_so2.py."""

from __future__ import annotations

from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule


def periodic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True).repeat((2, 2, 1))
    atoms[0].symbol = "Au"
    atoms.rattle(0.05, seed=0)
    return atoms


def slab() -> Atoms:
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(atoms, "O", 1.6, "fcc")
    atoms.rattle(0.05, seed=1)
    return atoms


def molecular() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


SYSTEMS = {"periodic": periodic, "slab": slab, "molecule": molecular}
