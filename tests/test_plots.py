"""Every figure of zoo.plots is a readable PNG and returns exactly the data it drew; the benchmark charts too."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from benchmarks import fairchem_models, loader_throughput, message_passing
from zoo import plots


def assert_png(path, min_size: int = 200) -> tuple[int, int]:
    """``path`` is a non-empty PNG that matplotlib reads back as an image of at least ``min_size`` pixels a side;
    returns (height, width)."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == plots.PNG_SIGNATURE and len(data) > 1000
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_size and max(image.shape[:2]) < 10_000
    assert image.std() > 0  # something is drawn
    return image.shape[:2]


HISTORY = [
    {"epoch": 0, "step": 0, "val_loss": 5.0, "val_energy_mae": 0.5, "val_energy_rmse": 0.6, "val_forces_mae": 1.0},
    {"epoch": 1, "step": 6, "lr": 0.01, "train_loss": 4.0, "val_loss": 3.0, "val_energy_mae": 0.3,
     "val_energy_rmse": 0.4, "val_forces_mae": 0.7},
    {"epoch": 2, "step": 12, "lr": 0.01, "train_loss": 2.0, "val_loss": 1.5, "val_energy_mae": 0.2,
     "val_energy_rmse": 0.25, "val_forces_mae": 0.4},
]  # fmt: skip


def test_learning_curves_draw_the_history(tmp_path):
    curves = plots.learning_curves(HISTORY, tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    assert list(curves) == ["val_loss", "val_energy_mae", "val_energy_rmse", "val_forces_mae", "train_loss"]
    steps, values = curves["train_loss"]  # epoch 0 has no training loss
    assert steps.tolist() == [6, 12] and values.tolist() == [4.0, 2.0]
    assert curves["val_forces_mae"][1].tolist() == [1.0, 0.7, 0.4]
    assert "lr" not in curves and "epoch" not in curves


def test_learning_curves_read_metrics_csv_rows(tmp_path):
    from zoo.train.progress import write_csv

    write_csv(HISTORY, tmp_path / "metrics.csv")
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))  # strings, empty cells where a column is missing
    from_csv = plots.learning_curves(rows, tmp_path / "from_csv.png")
    from_rows = plots.learning_curves(HISTORY, tmp_path / "from_rows.png")
    assert from_csv.keys() == from_rows.keys()
    for key, (steps, values) in from_rows.items():
        np.testing.assert_array_equal(from_csv[key][0], steps)
        np.testing.assert_allclose(from_csv[key][1], values, rtol=1e-6)
    assert_png(tmp_path / "from_csv.png")


def test_learning_curves_accept_negative_losses(tmp_path):
    history = [{"epoch": 1, "step": 1, "train_loss": -1.0, "val_loss": -2.0}, {"epoch": 2, "step": 2, "val_loss": 0.5}]
    curves = plots.learning_curves(history, tmp_path / "curves.png")
    assert curves["val_loss"][1].tolist() == [-2.0, 0.5]
    assert_png(tmp_path / "curves.png")


def test_parity_returns_the_points_and_their_errors(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10, 3))
    predicted = reference + 0.1 * rng.normal(size=(10, 3))
    data = plots.parity(predicted, reference, tmp_path / "parity.png", name="forces", unit="eV/Å")
    assert_png(tmp_path / "parity.png")
    np.testing.assert_array_equal(data["predicted"], predicted.ravel())
    np.testing.assert_array_equal(data["reference"], reference.ravel())
    assert data["mae"] == pytest.approx(np.abs(predicted - reference).mean())
    assert data["rmse"] == pytest.approx(math.sqrt(np.square(predicted - reference).mean()))
    with pytest.raises(ValueError, match="as many predictions"):
        plots.parity([1.0, 2.0], [1.0], tmp_path / "bad.png", name="energy")
    with pytest.raises(ValueError, match="as many predictions"):
        plots.parity([], [], tmp_path / "empty.png", name="energy")


def test_md_traces(tmp_path):
    time_fs = np.arange(5) * 10.0
    potential = np.array([-10.0, -10.2, -10.1, -10.3, -10.0])
    kinetic = np.array([0.3, 0.5, 0.4, 0.6, 0.3])
    temperature = np.array([300.0, 310.0, 290.0, 305.0, 300.0])
    data = plots.md_traces(
        time_fs, potential, kinetic, temperature, tmp_path / "md.png", n_atoms=8, target_temperature=300.0
    )
    assert_png(tmp_path / "md.png")
    np.testing.assert_array_equal(data["total"], potential + kinetic)
    np.testing.assert_array_equal(data["temperature"], temperature)
    with pytest.raises(ValueError, match="same, non-zero number"):
        plots.md_traces(time_fs, potential[:3], kinetic, temperature, tmp_path / "bad.png")


def test_molecule_grid_labels_valid_and_invalid_molecules(tmp_path):
    broken = molecule("CH4") + Atoms("H", positions=[[0.0, 0.0, -1.09]])  # a carbon with five bonds
    data = plots.molecule_grid([molecule("CH3CH2OH"), molecule("C6H6"), broken], tmp_path / "grid.png", per_row=2)
    height, width = assert_png(tmp_path / "grid.png")
    assert (width, height) == data["size"] == (2 * 220, 2 * 220)
    assert data["valid"].tolist() == [True, True, False]
    assert data["legends"][0] == "CCO" and data["legends"][2] == "invalid CH5"


def test_bond_length_histograms_with_and_without_reference(tmp_path):
    generated = [molecule("CH3CH2OH"), molecule("CH4")]
    reference = [molecule("CH3OH"), molecule("C2H6")]
    data = plots.bond_length_histograms(generated, tmp_path / "bonds.png", reference=reference)
    assert_png(tmp_path / "bonds.png")
    assert list(data) == ["C-H", "C-C", "C-O", "O-H"]  # most frequent pair first
    assert data["C-H"]["generated"].size == 9 and data["C-H"]["reference"].size == 9
    assert data["C-C"]["reference"].size == 1 and data["C-C"]["reference"][0] == pytest.approx(
        reference[1].get_distance(0, 1)
    )
    alone = plots.bond_length_histograms(generated, tmp_path / "alone.png")
    assert_png(tmp_path / "alone.png")
    assert all("reference" not in entry for entry in alone.values())
    np.testing.assert_array_equal(alone["C-O"]["generated"], data["C-O"]["generated"])


def test_ratio_bars_leave_gaps_for_missing_ratios(tmp_path):
    data = plots.ratio_bars(
        {"qm9": {"zoo torch": 1.3, "zoo compile": 1.8}, "oc20": {"zoo torch": 1.4}}, tmp_path / "r.png", title="t"
    )
    assert_png(tmp_path / "r.png")
    assert data["groups"] == ["qm9", "oc20"] and data["series"] == ["zoo torch", "zoo compile"]
    np.testing.assert_array_equal(data["values"], [[1.3, 1.8], [1.4, np.nan]])


def test_message_passing_benchmark_plots(tmp_path):
    layer = {"section": "layer", "workload": "qm9", "hidden": 64, "baseline": "pyg"}
    op = {"section": "op", "workload": "qm9", "hidden": 64, "mlp_layers": 1}
    results = {
        "device_name": "cpu",
        "rows": [
            {**layer, "impl": "pyg", "median_s": 2.0, "speedup_vs_baseline": 1.0},
            {**layer, "impl": "zoo torch", "median_s": 1.0, "speedup_vs_baseline": 2.0},
            {**layer, "impl": "zoo compile", "error": "RuntimeError: no compiler"},
            {**op, "impl": "torch eager", "median_s": 3.0},
            {**op, "impl": "zoo torch", "median_s": 1.0},
            {"section": "determinism", "workload": "qm9", "hidden": 64, "impl": "zoo torch", "bitwise": True},
        ],
    }
    written = message_passing.plot(results, tmp_path)
    assert written == [tmp_path / "layer_speedup.png", tmp_path / "op_speedup.png"]
    for path in written:
        assert_png(path)
    assert not message_passing.parse_args(["--out", str(tmp_path), "--no-plots"]).plots
    assert message_passing.parse_args(["--out", str(tmp_path)]).plots


def test_fairchem_and_loader_benchmark_plots(tmp_path):
    rows = [{"model": "eqv2-31m", "ratio_fairchem_over_zoo": 1.7}, {"model": "escn-l4", "timings": {}}]
    assert_png(fairchem_models.plot({"rows": rows, "fairchem": "1.10.0", "device_name": "cpu"}, tmp_path))
    assert not fairchem_models.parse_args(["--out", str(tmp_path), "--no-plots"]).plots
    formats = {"extxyz": {"ratio": 1.0}, "aselmdb": {"ratio": 3.2, "loader_ratio": 2.5}}
    path = loader_throughput.plot({"formats": formats, "structures": 100, "runs": 3}, tmp_path / "loaders")
    assert_png(path)
