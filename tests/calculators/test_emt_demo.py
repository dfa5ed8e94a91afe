"""The embedded default potential `equiformer-v2-emt-demo`: it loads offline, is trained (errors on fresh EMT
structures far below an untrained model's), refuses what it was not trained for, and relaxes an adsorbate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

import zoo
from zoo.graph import GraphError

NAME = "equiformer-v2-emt-demo"
# Measured on the held-out test set: force MAE ~0.03 eV/Å (card). An untrained model of the same configuration
# gives 0.32 eV/Å on these structures; the bound leaves room for the few structures drawn here.
FORCE_MAE_BOUND = 0.12


def _structures() -> list:
    rng = np.random.default_rng(7)
    structures = []
    for metal in ("Cu", "Pt", "Ag"):
        crystal = bulk(metal, "fcc", cubic=True).repeat(2)
        crystal.rattle(0.05, seed=int(rng.integers(1000)))
        slab = fcc111(metal, size=(2, 2, 3), vacuum=6.0)
        add_adsorbate(slab, "O", 1.5, "fcc")
        slab.rattle(0.05, seed=int(rng.integers(1000)))
        structures += [crystal, slab]
    return structures


def test_loads_offline_and_is_trained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = zoo.load(NAME)
    assert model.metadata["force_mode"] == "direct"
    assert model.metadata["elements"] == [1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79]
    errors = []
    for atoms in _structures():
        predicted = zoo.predict(model, [atoms])[0]["forces"]
        errors.append(np.abs(predicted - _emt_forces(atoms)).ravel())
    assert np.concatenate(errors).mean() < FORCE_MAE_BOUND


def _emt_forces(atoms) -> np.ndarray:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_forces()


def test_refuses_untrained_elements_and_stress():
    calc = zoo.calculator(NAME)
    iron = bulk("Fe", "bcc", a=2.87, cubic=True)
    with pytest.raises(GraphError, match="Fe"):
        calc.get_potential_energy(iron)
    copper = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(PropertyNotImplementedError, match="no stress"):
        zoo.calculator(NAME).get_stress(copper)


def test_relaxes_an_adsorbate():
    slab = fcc111("Pt", (3, 3, 3), vacuum=8.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
    slab.calc = zoo.calculator(NAME, dtype=torch.float32)
    assert BFGS(slab, logfile=None).run(fmax=0.05, steps=200)
