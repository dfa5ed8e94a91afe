"""Plots of `zoo finetune`, `zoo train`, `zoo md` and `zoo sample`: valid PNGs, the data drawn is the data of the
run (parity points = predictions of the saved model, labels = the data), and `--no-plots` writes none."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from rdkit import Chem

import zoo
from zoo import plots
from zoo.cli.main import main
from zoo.graph import batch_graphs, from_ase, radius_graph
from zoo.metrics.molecules import to_rdkit

_spec = importlib.util.spec_from_file_location("train_fixtures", Path(__file__).parents[1] / "train" / "conftest.py")
train_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_fixtures)  # EMT data, the base potential and the finetune command of tests/train

PARITY = [f"parity_{target}_{split}" for target in ("energy", "forces") for split in ("train", "val")]


def assert_png(path, min_size: int = 200) -> None:
    """``path`` is a non-empty PNG that matplotlib reads back as an image of plausible size."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == plots.PNG_SIGNATURE and len(data) > 1000
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_size and max(image.shape[:2]) < 10_000


@pytest.fixture(scope="module")
def emt(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("emt")
    paths = {"train": root / "train.extxyz", "val": root / "val.extxyz"}
    ase.io.write(paths["train"], train_fixtures.emt_frames(12, seed=1), format="extxyz")
    ase.io.write(paths["val"], train_fixtures.emt_frames(6, seed=2), format="extxyz")
    return paths


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, emt) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    base = train_fixtures.save_base_model(root / "base")
    command = train_fixtures.finetune_command(base, emt, root / "run", "--epochs", "3", "--set", "ema.decay=0.9")
    assert main(command) == 0
    return root / "run"


def test_finetune_writes_learning_curves_and_parity_plots(finetuned):
    directory = finetuned / "plots"
    assert sorted(p.name for p in directory.glob("*.png")) == sorted(
        ["learning_curves.png", *(f"{stem}.png" for stem in PARITY)]
    )
    for path in directory.glob("*.png"):
        assert_png(path)


@pytest.mark.parametrize("split", ["train", "val"])
def test_parity_points_are_the_saved_models_predictions(finetuned, emt, split):
    model = zoo.load(finetuned / "model").eval()
    frames = ase.io.read(emt[split], index=":")
    batch = batch_graphs([radius_graph(from_ase(atoms), model.metadata["cutoff"]) for atoms in frames])
    output = model(batch)
    natoms = np.array([len(atoms) for atoms in frames])
    expected = {
        "energy": (
            output["energy"].detach().numpy() / natoms,
            np.array([atoms.get_potential_energy() for atoms in frames]) / natoms,
        ),
        "forces": (
            output["forces"].detach().numpy().ravel(),
            np.concatenate([atoms.get_forces().ravel() for atoms in frames]),
        ),
    }
    with open(finetuned / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) > 0]
    best = min(rows, key=lambda row: float(row["val_loss"]))  # the exported EMA weights were validated there
    for target, (predicted, reference) in expected.items():
        drawn = np.load(finetuned / "plots" / f"parity_{target}_{split}.npz")
        np.testing.assert_array_equal(drawn["structures"], np.arange(len(frames)))
        np.testing.assert_allclose(drawn["predicted"], predicted, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(drawn["reference"], reference, rtol=1e-6, atol=1e-6)
        if split == "val":
            mae = np.abs(drawn["predicted"] - drawn["reference"]).mean()
            assert mae == pytest.approx(float(best[f"val_{target}_mae"]), rel=1e-5)


def test_train_plots_the_targets_of_its_loss_and_no_plots_writes_none(tmp_path, emt, monkeypatch):
    monkeypatch.setattr("zoo.train.run._PARITY_MAX_STRUCTURES", 4)  # larger sets: an evenly spaced subset
    model = ["--set", "model.architecture=test-pair-potential", "--set", "model.args={cutoff: 4.0, hidden: 16}"]
    data = ["--train", str(emt["train"]), "--val", str(emt["val"]), "--device", "cpu", "--batch-size", "4"]
    energy_only = ["--set", "loss.targets={energy: {weight: 1.0, per_atom: true}}", "--epochs", "2"]
    assert main(["train", *model, *data, *energy_only, "-o", str(tmp_path / "run")]) == 0
    directory = tmp_path / "run" / "plots"
    assert sorted(p.name for p in directory.iterdir()) == [
        "learning_curves.png",
        "parity_energy_train.npz",
        "parity_energy_train.png",
        "parity_energy_val.npz",
        "parity_energy_val.png",
    ]
    for path in directory.glob("*.png"):
        assert_png(path)
    drawn = np.load(directory / "parity_energy_train.npz")
    assert drawn["structures"].tolist() == [0, 4, 7, 11]
    frames = [ase.io.read(emt["train"], index=i) for i in (0, 4, 7, 11)]
    np.testing.assert_allclose(drawn["reference"], [a.get_potential_energy() / len(a) for a in frames], rtol=1e-6)
    assert drawn["predicted"].shape == (4,)
    assert main(["train", *model, *data, "--epochs", "1", "--no-plots", "-o", str(tmp_path / "quiet")]) == 0
    assert (tmp_path / "quiet" / "model" / "model.safetensors").exists()
    assert not (tmp_path / "quiet" / "plots").exists()


@pytest.fixture(scope="module")
def potential_dir(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1, cutoff=4.0, elements=[29])
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("models") / "potential")


def test_md_plots_the_energies_and_temperature_of_its_trajectory(potential_dir, tmp_path, monkeypatch):
    drawn = {}

    def spy(*args, **kwargs):
        drawn.update(plots.md_traces(*args, **kwargs))
        return drawn

    monkeypatch.setattr("zoo.cli.md.md_traces", spy)
    ase.io.write(tmp_path / "bulk.extxyz", bulk("Cu", "fcc", a=3.6).repeat(2))
    arguments = ["md", str(tmp_path / "bulk.extxyz"), "--model", str(potential_dir), "--ensemble", "nvt-langevin"]
    arguments += ["--steps", "20", "--dt", "0.5", "--interval", "5"]
    assert main([*arguments, "-o", str(tmp_path / "hot.traj")]) == 0
    assert_png(tmp_path / "hot.png")
    frames = ase.io.read(tmp_path / "hot.traj", index=":")
    np.testing.assert_allclose(drawn["time_fs"], [0.0, 2.5, 5.0, 7.5, 10.0])
    np.testing.assert_allclose(drawn["potential"], [a.get_potential_energy() for a in frames], rtol=1e-6)
    np.testing.assert_allclose(drawn["kinetic"], [a.get_kinetic_energy() for a in frames], rtol=1e-6)
    np.testing.assert_allclose(drawn["temperature"], [a.get_temperature() for a in frames], rtol=1e-6)

    assert main([*arguments, "-o", str(tmp_path / "quiet.traj"), "--no-plots"]) == 0
    assert (tmp_path / "quiet.traj").exists() and not (tmp_path / "quiet.png").exists()


@pytest.fixture(scope="module")
def edm_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = zoo.create_model("edm-qm9", hidden_nf=8, n_layers=1, timesteps=5)
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("models") / "edm")


def test_sample_draws_the_molecules_and_their_bond_lengths(edm_dir, tmp_path, monkeypatch):
    calls = []

    def spy(generated, path, **kwargs):
        calls.append({"generated": generated, **kwargs})
        return plots.bond_length_histograms(generated, path, **kwargs)

    monkeypatch.setattr("zoo.cli.sample.bond_length_histograms", spy)
    reference = [molecule(name) for name in ("CH3CH2OH", "CH3OH", "C2H6")]
    ase.io.write(tmp_path / "reference.extxyz", reference)
    arguments = ["sample", str(edm_dir), "-n", "4", "--n-atoms", "5"]
    output = tmp_path / "mols.extxyz"
    assert main([*arguments, "-o", str(output), "--reference", str(tmp_path / "reference.extxyz")]) == 0
    assert_png(tmp_path / "mols_grid.png")
    assert_png(tmp_path / "mols_bond_lengths.png")
    generated = ase.io.read(output, index=":")
    assert len(calls[0]["generated"]) == len(generated) == 4
    for drawn, written in zip(calls[0]["generated"], generated, strict=True):
        np.testing.assert_allclose(drawn.positions, written.positions, atol=1e-6)
    assert [a.get_chemical_formula() for a in calls[0]["reference"]] == [a.get_chemical_formula() for a in reference]
    with Chem.SDWriter(str(tmp_path / "reference.sdf")) as writer:
        for atoms in reference:
            writer.write(to_rdkit(atoms))
    assert main([*arguments, "-o", str(output), "--reference", str(tmp_path / "reference.sdf")]) == 0
    for read, written in zip(calls[1]["reference"], reference, strict=True):
        assert read.get_chemical_formula() == written.get_chemical_formula()
        np.testing.assert_allclose(read.positions, written.positions, atol=1e-4)

    assert main([*arguments, "-o", str(tmp_path / "alone.sdf")]) == 0  # no reference set
    assert calls[2]["reference"] is None
    assert_png(tmp_path / "alone_grid.png")
    assert_png(tmp_path / "alone_bond_lengths.png")

    assert main([*arguments, "-o", str(tmp_path / "quiet.sdf"), "--no-plots"]) == 0
    assert (tmp_path / "quiet.sdf").exists() and not list(tmp_path.glob("quiet*.png"))
