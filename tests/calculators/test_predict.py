"""Batch inference: input order, mixed sizes and periodicity, batching budgets, equal to one-by-one results."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule

import zoo
from zoo.calculators.predict import _batches


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(1)
    return zoo.create_model("egnn-potential", hidden_nf=16, n_layers=2, cutoff=4.0).double().eval()


def structures():
    items = [bulk("Cu", "fcc", a=3.6), molecule("H2O"), fcc111("Au", size=(2, 2, 3), vacuum=5.0)]
    items += [bulk("Pt", "fcc", a=3.9).repeat((2, 1, 1)), molecule("CH4"), bulk("Al", cubic=True)]
    for seed, atoms in enumerate(items):
        atoms.rattle(0.03, seed=seed)
    return items


@pytest.mark.parametrize("options", [{"batch_size": 1}, {"batch_size": 4}, {"max_atoms": 13}])
def test_batched_equals_one_by_one(potential, options):
    items = structures()
    results = zoo.predict(potential, items, **options)
    assert len(results) == len(items)
    for atoms, result in zip(items, results, strict=True):
        atoms.calc = zoo.calculator(potential)
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        assert np.abs(result["forces"] - atoms.get_forces()).max() < 1e-10
        assert result["forces"].shape == (len(atoms), 3)
        if atoms.pbc.all():
            assert np.abs(result["stress"] - atoms.get_stress()).max() < 1e-10
        else:
            assert "stress" not in result


def test_batches_respect_budgets_and_order():
    items = structures()
    for budget in (1, 5, 13, 40):
        batches = list(_batches(items, None, budget))
        assert [a for batch in batches for a in batch] == items
        assert all(sum(len(a) for a in batch) <= budget or len(batch) == 1 for batch in batches)
        assert all(len({bool(a.pbc.all()) for a in batch}) == 1 for batch in batches)


def test_files_and_atoms_mixed(potential, tmp_path):
    items = structures()
    ase.io.write(tmp_path / "some.extxyz", items[:3])
    results = zoo.predict(potential, [tmp_path / "some.extxyz", *items[3:]], batch_size=2)
    direct = zoo.predict(potential, items, batch_size=6)
    assert [r["energy"] for r in results] == pytest.approx([r["energy"] for r in direct], abs=1e-10)


def test_bad_budget(potential):
    with pytest.raises(ValueError, match="positive"):
        zoo.predict(potential, structures(), batch_size=0)
