"""Training on a data set that brings its own graphs (`data.dataset`): the N-body trajectories of the EGNN
paper, validation every few epochs, provenance in the card, and clear errors for bad sources."""

from __future__ import annotations

import csv

import pytest
import torch

import zoo
from zoo.cli.main import main
from zoo.datasets import NBodyDataset, generate_nbody_dataset
from zoo.train.config import TrainConfig, apply_overrides
from zoo.train.data import DataError, open_graph_dataset
from zoo.train.run import run_training


@pytest.fixture(scope="module")
def nbody_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nbody")
    generate_nbody_dataset(root, num_train=40, num_valid=20, num_test=20, length=1000, length_test=1000)
    return root


def _config(root, *overrides: str) -> TrainConfig:
    raw = {
        "model": {"architecture": "egnn-nbody", "args": {"hidden_nf": 16, "n_layers": 2}},
        "data": {
            "dataset": {"name": "nbody", "root": str(root), "args": {"kind": "charged", "frame_0": 2, "frame_T": 6}}
        },
        "loss": {"targets": {"pos": {"label": "pos_target"}}},
        "optim": {"name": "adam", "lr": 1e-3},
        "ema": {"enabled": False},
        "train": {"device": "cpu", "log_every_steps": 100},
    }
    return TrainConfig.model_validate(apply_overrides(raw, list(overrides)))


def test_nbody_training_validates_every_k_epochs_and_records_the_data(nbody_root, tmp_path):
    config = _config(nbody_root, "data.batch_size=10", "train.epochs=5", "train.val_every_epochs=2")
    result = run_training(config, output=tmp_path / "run")
    epochs = [row["epoch"] for row in result.fit.history]
    assert epochs == [0, 2, 4, 5]  # before training, every 2nd epoch, and the last one
    assert result.fit.steps == 20
    assert result.fit.best["val_loss"] < result.fit.step0["val_loss"]
    with open(tmp_path / "run" / "metrics.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == epochs

    model = zoo.load(result.model_dir)
    test = NBodyDataset(nbody_root, "test", frame_0=2, frame_T=6)
    batch = zoo.graph.batch_graphs([test[i] for i in range(4)])
    assert model(batch)["pos"].shape == batch.pos_target.shape
    card = (result.model_dir / "README.md").read_text()
    assert "| train | nbody:train | 40 |" in card and "| val | nbody:valid | 20 |" in card


def test_dataset_and_structure_files_exclude_each_other(nbody_root, tmp_path):
    config = _config(nbody_root, "data.train=[a.extxyz]")
    with pytest.raises(ValueError, match="exclude each other"):
        run_training(config, output=tmp_path / "run")


def test_bad_dataset_sources_name_the_fix(nbody_root, tmp_path):
    with pytest.raises(DataError, match="choose one of \\['nbody'\\]"):
        open_graph_dataset("qm7", str(nbody_root), "train", dtype=torch.float32)
    with pytest.raises(DataError, match="do not fit"):
        open_graph_dataset("nbody", str(nbody_root), "train", dtype=torch.float32, args={"colour": 1})
    with pytest.raises(DataError, match="generate_nbody_dataset"):
        open_graph_dataset("nbody", str(tmp_path), "train", dtype=torch.float32)
    config = _config(nbody_root, "loss.targets.pos.label=pos_final")
    with pytest.raises(DataError, match="no field \\['pos_final'\\]"):
        run_training(config, output=tmp_path / "run")


def test_zoo_train_cli_with_a_dataset_config(nbody_root, tmp_path, capsys):
    config = tmp_path / "nbody.yaml"
    config.write_text(
        "model: {architecture: segno-nbody, args: {hidden_nf: 8, n_layers: 2}}\n"
        f"data: {{dataset: {{name: nbody, root: '{nbody_root}', args: {{frame_0: 2, frame_T: 6}}}}, batch_size: 20}}\n"
        "loss: {targets: {pos: {label: pos_target}}}\n"
        "ema: {enabled: false}\n"
        "train: {epochs: 1, device: cpu}\n"
    )
    assert main(["train", "-c", str(config), "-o", str(tmp_path / "run")]) == 0
    assert "the 'nbody' data set" in capsys.readouterr().out
