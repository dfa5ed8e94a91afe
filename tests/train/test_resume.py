"""A run killed with SIGKILL in the middle of an epoch and resumed with --resume auto ends with the same weights
as an uninterrupted run; a killed write never leaves a broken checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from conftest import finetune_command, launcher_command
from zoo.cli.main import main
from zoo.train.state import load_state, save_state


def _args(base, data, output, *extra: str) -> list[str]:
    return finetune_command(
        base,
        data,
        output,
        "--epochs",
        "3",
        "--set",
        "checkpoint.every_steps=4",
        "--set",
        "schedule.name=plateau",
        "--set",
        "schedule.patience=0",
        *extra,
    )


def test_sigkill_mid_epoch_then_resume_auto_matches_uninterrupted(tmp_path, emt_data, base_model, capsys):
    assert main(_args(base_model, emt_data, tmp_path / "straight")) == 0
    capsys.readouterr()

    # 24 structures / batch 4 = 6 steps per epoch; 'last' is written at steps 4 (mid-epoch 1), 6 (end of epoch 1),
    # 8 (mid-epoch 2): pause after the third write and kill the process there, mid-epoch 2.
    killed = tmp_path / "killed"
    env = {**os.environ, "ZOO_TEST_PAUSE_AFTER_SAVES": "3", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(
        [*launcher_command(), *_args(base_model, emt_data, killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        for line in process.stdout:
            if line.startswith("PAUSED AT STEP"):
                break
        else:
            pytest.fail(f"the run ended without pausing (exit status {process.wait()})")
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.stdout.close()
    assert line.strip() == "PAUSED AT STEP 8"
    state = load_state(killed / "checkpoints" / "last.safetensors")
    assert (state["progress"]["epoch"], state["progress"]["batch_in_epoch"]) == (1, 2)  # mid-epoch 2
    assert not (killed / "model").exists()

    assert main(_args(base_model, emt_data, killed)) == 2  # an existing run is never overwritten silently
    assert "--resume auto" in capsys.readouterr().err
    assert main([*_args(base_model, emt_data, killed), "--resume", "auto"]) == 0
    assert "at step 8 (epoch 2, batch 2)" in capsys.readouterr().out

    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(killed / "model" / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    final_straight = load_state(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    final_resumed = load_state(killed / "checkpoints" / "last.safetensors")
    assert final_resumed["history"] == final_straight["history"]
    for key, value in final_straight["optimizer"]["state"][0].items():
        torch.testing.assert_close(final_resumed["optimizer"]["state"][0][key], value, rtol=0, atol=0)


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_state({"step": 1, "weights": torch.ones(3)}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("zoo.train.state.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_state({"step": 2, "weights": torch.zeros(3)}, path)
    assert load_state(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary file left behind
