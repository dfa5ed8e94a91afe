"""`zoo sample` on a tiny saved EDM: writes the molecules and reports the metrics."""

from __future__ import annotations

import json

import ase.io
import pytest
import torch
from rdkit import Chem

import zoo
from zoo.cli.main import main


@pytest.fixture(scope="module")
def edm_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = zoo.create_model("edm-qm9", hidden_nf=8, n_layers=1, timesteps=5)
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("models") / "edm")


def test_sample_writes_sdf_and_metrics(edm_dir, tmp_path, capsys):
    output = tmp_path / "mols.sdf"
    arguments = ["sample", str(edm_dir), "-n", "3", "--n-atoms", "4", "-o", str(output)]
    assert main([*arguments, "--metrics-json", str(tmp_path / "m.json")]) == 0
    molecules = [m for m in Chem.SDMolSupplier(str(output), removeHs=False, sanitize=False)]
    assert len(molecules) == 3 and all(m.GetNumAtoms() == 4 for m in molecules)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_molecules"] == 3 and 0.0 <= metrics["atom_stability"] <= 1.0
    assert "atom_stability" in capsys.readouterr().out


def test_sample_extxyz_is_seeded(edm_dir, tmp_path):
    for name in ("a.extxyz", "b.extxyz"):
        main(["sample", str(edm_dir), "-n", "2", "--n-atoms", "3", "--seed", "7", "-o", str(tmp_path / name)])
    first, second = ase.io.read(tmp_path / "a.extxyz", ":"), ase.io.read(tmp_path / "b.extxyz", ":")
    assert all((x.positions == y.positions).all() for x, y in zip(first, second, strict=True))


def test_sample_refuses_a_potential(tmp_path, capsys):
    model_dir = zoo.save_pretrained(zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1), tmp_path / "pot")
    assert main(["sample", str(model_dir), "-o", str(tmp_path / "x.sdf")]) == 2
    assert "needs a generative one" in capsys.readouterr().err
