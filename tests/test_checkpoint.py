"""The zoo checkpoint format: save_pretrained / from_pretrained round trips and their errors."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.checkpoint import CheckpointError
from zoo.testing import molecule_graph


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return zoo.create_model("test-pair-potential", num_basis=6, hidden=8).double().eval()


def test_round_trip_identical_outputs(tmp_path):
    model = tiny_model()
    graph = molecule_graph()
    directory = zoo.save_pretrained(model, tmp_path / "ckpt", metadata={"note": "unit test"})
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert config["architecture"] == "test-pair-potential"
    assert config["model_args"] == {"num_basis": 6, "hidden": 8}
    assert config["task"] == "potential"
    assert config["metadata"]["cutoff"] == 5.0 and config["metadata"]["note"] == "unit test"
    assert "library_name: zoo" in (directory / "README.md").read_text()
    again = zoo.from_pretrained(directory)
    assert not again.training
    assert again.metadata["note"] == "unit test"
    expected, got = model(graph), again(graph)
    assert torch.equal(expected["energy"], got["energy"])
    assert torch.equal(expected["forces"], got["forces"])
    assert zoo.load(directory).metadata == again.metadata  # a local directory is a valid name


def test_dtype_and_device_options(tmp_path):
    directory = zoo.save_pretrained(tiny_model(), tmp_path / "ckpt")
    model = zoo.load(directory, dtype=torch.float32, device="cpu")
    assert next(model.parameters()).dtype == torch.float32


def test_save_replaces_existing_checkpoint_whole(tmp_path):
    first = zoo.save_pretrained(tiny_model(0), tmp_path / "ckpt")
    zoo.save_pretrained(tiny_model(1), tmp_path / "ckpt")
    loaded = zoo.from_pretrained(first)
    assert torch.equal(loaded.pair[0].weight, tiny_model(1).pair[0].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or backup left over


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="plain JSON"):
        zoo.save_pretrained(tiny_model(), tmp_path / "ckpt", metadata={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_model_without_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"zoo\.create_model"):
        zoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")


def test_truncated_weights(tmp_path):
    directory = zoo.save_pretrained(tiny_model(), tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        zoo.from_pretrained(directory)


def test_weights_not_matching_config(tmp_path):
    directory = zoo.save_pretrained(tiny_model(), tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    config["model_args"]["hidden"] = 9
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match architecture 'test-pair-potential'"):
        zoo.from_pretrained(directory)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "config.json not found"), ("{not json", "not valid JSON"), ('{"architecture": "x"}', "lacks")],
)
def test_bad_config(tmp_path, content, message):
    directory = zoo.save_pretrained(tiny_model(), tmp_path / "ckpt")
    if content is None:
        (directory / "config.json").unlink()
    else:
        (directory / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        zoo.from_pretrained(directory)
