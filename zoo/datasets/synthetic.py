"""Random labelled structures for tests, examples and loader benchmarks (not physics: labels are random numbers)."""

from __future__ import annotations

import ase
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

__all__ = ["random_structures"]


def random_structures(
    count: int,
    *,
    seed: int = 0,
    min_atoms: int = 2,
    max_atoms: int = 12,
    elements: tuple[int, ...] = (1, 6, 7, 8),
    periodic: bool | None = None,
) -> list[ase.Atoms]:
    """``count`` structures: molecules (no cell, ``periodic=False``), periodic crystals (a random triclinic
    cell, ``pbc`` all True or slab-like ``(True, True, False)``, ``periodic=True``) or, by default, the two
    alternating. Each has ``energy`` (eV), ``forces [N, 3]``
    (eV/Å), ``stress`` (Voigt, eV/Å³, periodic ones only) in a :class:`SinglePointCalculator`, ``tags`` 0..2, the
    first atom fixed in crystals, ``charges`` (e) in ``atoms.arrays`` and ``charge`` 0 in ``atoms.info``.
    Atoms are at least 0.9 Å apart (rejection sampling), so neighbour lists never see overlaps.
    """
    rng = np.random.default_rng(seed)
    structures = []
    for index in range(count):
        natoms = int(rng.integers(min_atoms, max_atoms + 1))
        crystal = index % 2 == 1 if periodic is None else periodic
        box = 2.0 + natoms ** (1 / 3) * 1.6
        cell = np.diag([box, box, box]) + rng.uniform(-0.3, 0.3, (3, 3)) if crystal else np.zeros((3, 3))
        positions = []
        while len(positions) < natoms:
            candidate = rng.uniform(0.0, box, 3)
            if all(np.linalg.norm(candidate - other) > 0.9 for other in positions):
                positions.append(candidate)
        atoms = ase.Atoms(
            numbers=rng.choice(elements, natoms),
            positions=np.array(positions),
            cell=cell,
            pbc=(True, True, index % 4 != 1) if crystal else False,
            tags=rng.integers(0, 3, natoms),
        )
        if crystal:
            atoms.set_constraint(FixAtoms(indices=[0]))
            atoms.wrap()
        atoms.arrays["charges"] = rng.normal(0.0, 0.3, natoms)
        atoms.info["charge"] = 0
        results = {"energy": float(rng.normal(-3.0 * natoms, 1.0)), "forces": rng.normal(0.0, 1.0, (natoms, 3))}
        if crystal:
            results["stress"] = rng.normal(0.0, 0.01, 6)
        atoms.calc = SinglePointCalculator(atoms, **results)
        structures.append(atoms)
    return structures
