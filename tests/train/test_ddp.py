"""Two gloo processes under torchrun give the same result as one process on the same global batches."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import LAUNCHER, finetune_command
from zoo.cli.main import main


def _args(base, data, output) -> list[str]:
    return finetune_command(
        base,
        data,
        output,
        "--epochs",
        "2",
        "--set",
        "train.dtype=float64",
        "--set",
        "schedule.warmup_steps=2",
        "--set",
        "optim.accumulate=2",
    )


def _rows(path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_equal_one_process(tmp_path, emt_data, base_model, capsys):
    assert main(_args(base_model, emt_data, tmp_path / "single")) == 0
    capsys.readouterr()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(LAUNCHER)]
    result = subprocess.run(
        command + _args(base_model, emt_data, tmp_path / "ddp"), capture_output=True, text=True, env=env, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es) on cpu" in result.stdout

    base = load_file(base_model / "model.safetensors")
    single = load_file(tmp_path / "single" / "model" / "model.safetensors")
    ddp = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    assert single.keys() == ddp.keys() == base.keys()
    assert not torch.allclose(single["pair.0.weight"].double(), base["pair.0.weight"].double())  # it trained
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-9, atol=1e-11, msg=key)
    # The validation metrics, summed over the two processes' shards, match too.
    rows = zip(_rows(tmp_path / "single" / "metrics.csv"), _rows(tmp_path / "ddp" / "metrics.csv"), strict=True)
    for one, two in rows:
        for key in ("val_loss", "val_forces_mae", "val_energy_mae", "train_loss"):
            if one.get(key):
                assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-9), key
