"""The embedded N-body checkpoints (`egnn-nbody-charged`, `segno-nbody-charged`) load offline and predict fresh
trajectories far better than an untrained network or the linear baseline; their cards match the shipped files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import zoo
from zoo.datasets import generate_nbody_dataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from evaluate_nbody import evaluate  # noqa: E402

# Measured on 10,000 fresh trajectories: EGNN 0.0081, SEGNO 0.0050; the linear baseline x + t v about 0.08 and an
# untrained network above 0.1. 100 trajectories are noisy (heavy tails), so the bounds leave room.
BOUNDS = {"egnn-nbody-charged": ("egnn-nbody", 0.02), "segno-nbody-charged": ("segno-nbody", 0.015)}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("nbody-fresh")
    generate_nbody_dataset(root, seed=2032, num_train=1, num_valid=1, num_test=100)
    return root


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_shipped_checkpoint_predicts_fresh_trajectories(name, fresh, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    architecture, bound = BOUNDS[name]
    trained = evaluate(name, str(fresh), "test")
    assert trained["trajectories"] == 100 and trained["mse"] < bound
    untrained = evaluate(zoo.create_model(architecture), str(fresh), "test")
    assert untrained["mse"] > 5 * bound


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_card_reports_the_shipped_model(name):
    card = zoo.get_card(name)
    config = json.loads((ROOT / "zoo" / "weights" / name / "config.json").read_text())
    assert card.spec.architecture == config["architecture"] == BOUNDS[name][0]
    text = (ROOT / "cards" / f"{name}.md").read_text()
    assert f"configs/{name}.yaml" in text and "scripts/evaluate_nbody.py" in text
