"""`zoo train --help` and `zoo finetune --help` show complete examples; bad configs exit with status 2."""

from __future__ import annotations

import pytest

from zoo.cli.main import main


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_help_shows_a_complete_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"zoo {command} " in out
    for flag in ("--train", "--val", "-c", "--output", "--resume auto", "--set"):
        assert flag in out
    for section in ("data:", "loss:", "optim:", "schedule:", "train:"):
        assert section in out  # the example configuration file
    if command == "train":
        assert "torchrun --nproc_per_node" in out and "model: {architecture:" in out
    else:
        assert "finetune: {freeze:" in out and "step 0" in out


def test_config_errors_exit_2(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("optim: {lr: -1}\n")
    assert main(["train", "-c", str(config), "--train", "x.extxyz", "-o", str(tmp_path / "run")]) == 2
    assert "optim.lr: Input should be greater than 0" in capsys.readouterr().err
    assert main(["train", "--set", "model.architecture=nope", "--train", "x", "-o", str(tmp_path / "r")]) == 2
    assert "unknown architecture 'nope'" in capsys.readouterr().err
    missing = ["train", "--set", "model.architecture=test-pair-potential", "--resume", str(tmp_path / "none")]
    assert main([*missing, "--train", "x", "-o", str(tmp_path / "r")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
