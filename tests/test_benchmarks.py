"""The benchmark runners run (tiny sizes; timings are never asserted, only that every implementation ran and
agreed on the setup)."""

from __future__ import annotations

from benchmarks import message_passing


def test_whole_model_section_runs_and_reports(tmp_path):
    args = message_passing.parse_args(["--out", str(tmp_path), "--device", "cpu", "--skip-compile", "--runs", "3"])
    args.budget = float("inf")
    rows = message_passing.bench_model(64, 16, args)
    assert {(row["mode"], row["impl"]) for row in rows} == {
        (mode, impl)
        for mode in ("energy + forces", "train step (forces loss)")
        for impl in ("zoo own code", "zoo torch")
    }
    assert all("median_s" in row and row["edges"] > 0 for row in rows)
    table = message_passing.markdown(
        {"device_name": "cpu", "torch": "x", "threads": 1, "runs": 3, "warmup": 1, "copy_gbs": 1.0, "rows": rows}
    )
    assert "## Whole model: egnn-potential" in table and "train step (forces loss)" in table
