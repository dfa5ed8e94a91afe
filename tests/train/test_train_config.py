"""Typed configuration: unknown keys are errors with their path, YAML cannot run code, flags override keys."""

from __future__ import annotations

import argparse

import pytest

from zoo.cli.train import add_common_arguments, config_from_args
from zoo.train.config import ConfigError, load_config


def test_unknown_and_invalid_keys_are_all_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n  name: sgd\ntrain:\n  epochs: 0\nfoo: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "optim.learning_rate: unknown key" in message
    assert "optim.name: Input should be 'adamw' or 'adam'" in message
    assert "train.epochs: Input should be greater than or equal to 1" in message
    assert "foo: unknown key" in message


def test_yaml_cannot_build_python_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("optim: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_command_line_flags_override_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim: {lr: 0.1}\ntrain: {epochs: 50}\ndata: {train: [a.extxyz]}\n")
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(
        [
            *("-c", str(path), "-o", "out", "--lr", "1e-4", "--set", "train.epochs=3"),
            *("--set", "finetune.freeze=[embed.*]", "--train", "it's.extxyz", "--batch-size", "2"),
        ]
    )
    config = config_from_args(args)
    assert config.optim.lr == 1e-4
    assert config.train.epochs == 3
    assert config.finetune.freeze == ["embed.*"]
    assert config.data.train == ["it's.extxyz"]
    assert config.data.batch_size == 2
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["no-equals-sign"])
