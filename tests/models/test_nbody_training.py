"""Re-training the shipped N-body checkpoints' recipes end to end (slow): the configs in ``configs/`` with the
project trainer on freshly generated trajectories, shortened; the validation loss must fall."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.datasets import generate_nbody_dataset
from zoo.train.config import load_config
from zoo.train.run import run_training

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["egnn-nbody-charged", "segno-nbody-charged"])
def test_nbody_recipe_retrains_and_the_loss_falls(name, tmp_path):
    root = tmp_path / "nbody"
    generate_nbody_dataset(root, seed=7, num_train=300, num_valid=100, num_test=10)
    config = load_config(
        CONFIGS / f"{name}.yaml",
        [f"data.dataset.root={root}", "train.epochs=30", "train.val_every_epochs=5", "train.device=cpu"],
    )
    result = run_training(config, output=tmp_path / "run")
    assert result.fit.steps == 90  # 300 trajectories / batch 100, 30 epochs
    step0, best = result.fit.step0["val_loss"], result.fit.best["val_loss"]
    assert best < 0.5 * step0, (step0, best)
