"""`zoo finetune` on EMT data: step-0 report, the 2x force-error drop, the exported checkpoint and its card,
energy-reference refit, freezing and re-initialisation."""

from __future__ import annotations

import csv
import time

import ase.io
import pytest
import torch
import yaml

import zoo
from zoo.cli.main import main
from zoo.graph import batch_graphs, from_ase, radius_graph
from zoo.registry import split_front_matter
from zoo.train.finetune import freeze, refit_energy_reference, reinitialize

FAST = ["--device", "cpu", "--epochs", "10", "--batch-size", "4", "--lr", "0.02", "--set", "ema.decay=0.9"]


def _finetune(base, data, output, *extra: str) -> int:
    args = ["finetune", str(base), "--train", str(data["train"]), "--val", str(data["val"]), "-o", str(output)]
    return main([*args, *FAST, *extra])


def _force_mae(model: torch.nn.Module, path) -> float:
    """Validation force MAE computed independently of the trainer."""
    graphs = [radius_graph(from_ase(a), model.metadata["cutoff"]) for a in ase.io.read(path, index=":")]
    batch = batch_graphs(graphs)
    model.eval()
    return float((model(batch)["forces"] - batch.forces).abs().mean())


def test_finetune_halves_the_force_error_and_exports_a_zoo_checkpoint(tmp_path, emt_data, base_model, capsys):
    start = time.perf_counter()
    assert _finetune(base_model, emt_data, tmp_path / "run") == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out

    base_mae = _force_mae(zoo.load(base_model), emt_data["val"])
    tuned = zoo.load(tmp_path / "run" / "model")
    tuned_mae = _force_mae(tuned, emt_data["val"])
    assert tuned_mae < base_mae / 2, (base_mae, tuned_mae)
    assert elapsed < 30

    # the step-0 report is the base model's validation error, printed before training
    assert out.index("step 0 (before training)") < out.index("epoch 1 ")
    step0 = float(out.split("step 0 (before training):")[1].split("val_forces_mae ")[1].split()[0])
    assert step0 == pytest.approx(base_mae, rel=1e-5)
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(11))
    assert float(rows[0]["val_forces_mae"]) == pytest.approx(base_mae, rel=1e-5)
    assert "fine-tuning finished after 60 steps" in out and "step 0" in out and "best" in out

    front, body = split_front_matter((tmp_path / "run" / "model" / "README.md").read_text(), "card")
    assert front["library_name"] == "zoo" and front["base_model"] == str(base_model)
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["forces_mae"] == pytest.approx(tuned_mae, rel=1e-5)
    assert "| train | train.extxyz | 24 |" in body and "| val | val.extxyz | 8 |" in body
    assert tuned.metadata["elements"] == [29, 78, 79] and tuned.zoo_config["architecture"] == "test-pair-potential"
    assert yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())["optim"]["lr"] == 0.02


def test_energy_reference_refit_recovers_a_shifted_reference(tmp_path, emt_data, base_model):
    offsets = {29: -3.0, 78: 1.5, 79: -0.25}
    frames = ase.io.read(emt_data["train"], index=":")
    graphs = [radius_graph(from_ase(a), 4.0) for a in frames]
    shifted = []
    for graph in graphs:
        graph = graph.clone()
        graph.energy = graph.energy + sum(offsets[int(z)] for z in graph.z)
        shifted.append(graph)

    plain = refit_energy_reference(zoo.load(base_model).train(), graphs, mode="refit")
    model = zoo.load(base_model).train()
    before = model.element_energy.weight.detach().clone()
    moved = refit_energy_reference(model, shifted, mode="auto")
    assert moved.applied and moved.parameter == "element_energy.weight"
    for z, symbol in ((29, "Cu"), (78, "Pt"), (79, "Au")):
        assert moved.shifts[symbol] - plain.shifts[symbol] == pytest.approx(offsets[z], abs=1e-4)
        change = float(model.element_energy.weight.detach()[z] - before[z])
        assert change == pytest.approx(moved.shifts[symbol], abs=1e-5)
    assert moved.rmse_after < 0.1 * moved.rmse_before
    assert refit_energy_reference(model, shifted, mode="keep") is None


def test_freeze_keeps_named_parameters_and_reports_unknown_patterns(tmp_path, emt_data, base_model, capsys):
    one_epoch = ("--set", "finetune.freeze=[pair.0.*]", "--epochs", "1")
    assert _finetune(base_model, emt_data, tmp_path / "run", *one_epoch) == 0
    assert "frozen 2 parameter tensor(s)" in capsys.readouterr().out
    base, tuned = zoo.load(base_model), zoo.load(tmp_path / "run" / "model")
    torch.testing.assert_close(tuned.pair[0].weight, base.pair[0].weight, rtol=0, atol=0)
    assert not torch.equal(tuned.pair[2].weight, base.pair[2].weight)

    assert _finetune(base_model, emt_data, tmp_path / "other", "--set", "finetune.freeze=[pairs.*]") == 2
    assert "finetune.freeze pattern 'pairs.*' matches no name; closest: pair." in capsys.readouterr().err


def test_heads_are_kept_unless_reinitialised(base_model):
    model = zoo.load(base_model)
    assert freeze(model, []) == []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert reinitialize(model, ["pair.2"]) == ["pair.2"]
    after = model.state_dict()
    assert not torch.equal(after["pair.2.weight"], before["pair.2.weight"])
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("pair.2."))
