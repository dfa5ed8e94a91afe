"""Training-state files: safetensors + JSON, no pickle, exact round trip of optimiser and RNG states."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from zoo.train.state import StateError, load_state, save_state
from zoo.train.trainer import _rng_state, _set_rng_state


def test_optimizer_and_rng_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()
    path = save_state({"optimizer": optimizer.state_dict(), "rng": _rng_state(), "best": float("inf")}, tmp_path / "s")
    expected = torch.rand(5)
    state = load_state(path)
    _set_rng_state(state["rng"])
    torch.testing.assert_close(torch.rand(5), expected, rtol=0, atol=0)
    assert state["best"] == float("inf")

    again = torch.optim.AdamW(model.parameters(), lr=1.0)
    again.load_state_dict(state["optimizer"])
    assert again.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    for key, value in optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(again.state_dict()["state"][0][key], value)

    with safe_open(str(path), "pt") as handle:  # a plain safetensors file whose header holds the JSON
        assert json.loads(handle.metadata()["zoo_train_state"])["__dict__"]["best"] == float("inf")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = save_state({"w": torch.ones(100)}, tmp_path / "last.safetensors")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(StateError, match="truncated or corrupt"):
        load_state(path)
    with pytest.raises(StateError, match="no training state"):
        load_state(tmp_path / "missing.safetensors")
    with pytest.raises(StateError, match="only tensors and plain data"):
        save_state({"module": torch.nn.Linear(1, 1)}, tmp_path / "x.safetensors")
