"""The benchmark runners run (tiny sizes; timings are never asserted, only that every implementation ran and
agreed on the setup)."""

from __future__ import annotations

import pytest

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


def test_torch_scatter_shim_matches_reference_reductions():
    """benchmarks/shims/torch_scatter (fairchem's import on machines without torch-scatter): sums, means, maxima
    and minima along either dimension against index_add_ / a loop, empty segments 0, unknown reductions refused."""
    import importlib.util
    from pathlib import Path

    import torch

    path = Path(message_passing.__file__).with_name("shims") / "torch_scatter" / "__init__.py"
    spec = importlib.util.spec_from_file_location("zoo_shim_torch_scatter", path)
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)  # not as "torch_scatter": the real package may be installed here
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(7, 5, 3, generator=generator, dtype=torch.float64)
    index = torch.tensor([0, 2, 2, 4, 0, 1, 4])
    want_sum = torch.zeros(6, 5, 3, dtype=torch.float64).index_add_(0, index, src)
    count = torch.zeros(6, dtype=torch.float64).index_add_(0, index, torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(shim.scatter(src, index, dim=0, dim_size=6), want_sum)
    torch.testing.assert_close(
        shim.scatter(src, index, 0, reduce="mean", dim_size=6), want_sum / count.clamp(min=1)[:, None, None]
    )
    for reduce, fn in (("max", torch.amax), ("min", torch.amin)):
        got = shim.scatter(src, index, dim=0, reduce=reduce, dim_size=6)
        for node in range(6):
            rows = src[index == node]
            torch.testing.assert_close(got[node], fn(rows, dim=0) if len(rows) else torch.zeros(5, 3, dtype=src.dtype))
    columns = torch.tensor([1, 1, 0, 3, 3])
    got = shim.scatter(src, columns, dim=1)  # dim_size from the index: 4
    torch.testing.assert_close(got, torch.zeros(7, 4, 3, dtype=src.dtype).index_add_(1, columns, src))
    with pytest.raises(ValueError, match="reduce must be one of"):
        shim.scatter(src, index, dim=0, reduce="mul")


def test_bytes_moved_counts_the_receiver_sorted_inputs_once():
    """The roofline's numerator: features per gathered row, edge features, sources and row pointers, output."""
    import torch

    from benchmarks.workloads import Graph, bytes_moved, bytes_moved_backward
    from zoo.kernels import build_csr

    edge_index = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])
    graph = Graph("tiny", torch.zeros(3, 3), edge_index, build_csr(edge_index, 3))
    h = 8  # P once per node, Q once per edge, 1 edge feature per edge, output once per node: float32
    features = (3 * h + 4 * h + 4 + 3 * h) * 4
    assert bytes_moved(graph, h, torch.float32, two_layer=False) == features + 4 * 8 + 4 * 8
    assert bytes_moved(graph, h, torch.float64, two_layer=True) == 2 * features + 4 * 8 + 4 * 8 + (h * h + h) * 8
    # input gradients: the inputs again, dL/dout once per node, dL/dP, dL/dQ once per node, dL/de once per edge
    backward = (3 * h + 4 * h + 4 + 3 * h + 2 * 3 * h + 4) * 4 + 4 * 8 + 4 * 8
    assert bytes_moved_backward(graph, h, torch.float32, two_layer=False) == backward


def test_op_section_times_the_input_gradients(tmp_path):
    """The op section's backward rows: input gradients with the MLP frozen, one row per implementation, bytes from
    bytes_moved_backward, and the markdown table tells the passes apart."""
    import argparse

    import torch

    from benchmarks.workloads import Graph
    from zoo.kernels import build_csr

    torch.manual_seed(0)
    edge_index = torch.randint(0, 30, (2, 200))
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    edge_index = edge_index[:, torch.argsort(edge_index[1], stable=True)]
    graph = Graph("tiny", torch.zeros(30, 3), edge_index, build_csr(edge_index, 30))
    args = argparse.Namespace(runs=2, warmup=1, budget=float("inf"), compile_hidden=[], skip_compile=True)
    rows = message_passing.bench_op(graph, 16, True, 10.0, args, backward=True)
    assert {row["impl"] for row in rows} == {"torch eager", "zoo torch"}
    assert all(row["pass"] == "backward" and row["gbs"] > 0 for row in rows)
    rows += message_passing.bench_op(graph, 16, True, 10.0, args)
    results = {"device_name": "cpu", "torch": "x", "threads": 1, "runs": 2, "warmup": 1, "copy_gbs": 10.0}
    table = message_passing.markdown({**results, "rows": rows})
    for direction in ("backward", "forward"):
        assert f"| tiny | {graph.num_edges} | 16 | 2 | {direction} | zoo torch |" in table


def test_egnn_official_molecules_are_qm9_sized_and_separated():
    import numpy as np

    from benchmarks.egnn_official import SPECIES, molecules

    mols = molecules(12, seed=3)
    assert len(mols) == 12
    for numbers, positions in mols:
        assert 9 <= len(numbers) <= 29 and positions.shape == (len(numbers), 3)
        assert set(numbers.tolist()) <= set(SPECIES)
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + 10 * np.eye(len(numbers))
        assert distances.min() >= 0.9


@pytest.mark.reference
def test_egnn_official_benchmark_agrees_with_the_official_code(tmp_path):
    """benchmarks/egnn_official.py on 4 molecules with a checkout of vgsatorras/egnn (``ZOO_EGNN_CHECKOUT``)."""
    import os

    from benchmarks import egnn_official

    checkout = os.environ.get("ZOO_EGNN_CHECKOUT")
    if not checkout:
        pytest.skip("set ZOO_EGNN_CHECKOUT to a checkout of vgsatorras/egnn")
    argv = [checkout, "--device", "cpu", "--batch", "4", "--runs", "1", "--warmup", "1", "--backends", "torch"]
    results = egnn_official.main([*argv, "--out", str(tmp_path)])
    assert [row["impl"] for row in results["rows"]] == ["official", "zoo own code", "zoo torch"]
    for row in results["rows"]:
        assert row["pred_max_abs_diff"] < 1e-4 and row["forces_max_abs_diff"] < 1e-4 * results["max_forces"] + 1e-7
    assert (tmp_path / "results.md").read_text().startswith("# egnn-qm9: zoo vs the official EGNN code")


def test_fairchem_benchmark_batches_the_same_edges_for_both_libraries():
    """benchmarks/fairchem_models.py --batch: fairchem's Batch and zoo's batched graph hold the same slabs, atoms
    and edges (each slab rattled with its own seed), so both models see one input."""
    import torch

    from benchmarks.fairchem_models import inputs

    data, graph = inputs(torch.device("cpu"), batch=3)
    assert data.natoms.tolist() == [81, 81, 81] and graph.pos.shape == (243, 3)
    torch.testing.assert_close(data.pos, graph.pos, rtol=0, atol=0)
    assert torch.equal(data.edge_index, graph.edge_index)
    assert torch.equal(data.cell_offsets, graph.edge_shift.to(torch.float32))
    assert torch.equal(data.atomic_numbers, graph.z)
    assert not torch.equal(graph.pos[:81], graph.pos[81:162])  # different rattles


def test_gpu_script_fetches_missing_wheels_itself_and_skips_parts(tmp_path):
    """``bash benchmarks/gpu.sh`` is the one command of the GPU benchmark: without ``.whl/`` and with a package
    missing it runs ``gpu_wheels.sh`` for this python's version first; every part can be left out."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(root / "benchmarks" / "gpu.sh", tmp_path / "benchmarks" / "gpu.sh")
    calls = tmp_path / "calls.txt"
    (tmp_path / "benchmarks" / "gpu_wheels.sh").write_text(f'echo "$@" >> {calls}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(tmp_path / "out"), "HOME": str(tmp_path)}
    env.update({f"SKIP_{part}": "1" for part in ("TESTS", "BENCH", "SWEEP", "FAIRCHEM", "EGNN")})
    done = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit codes: pytest 0, benchmark 0, sweep 0, fairchem 0, egnn-official 0" in done.stdout
    assert "torch" in (tmp_path / "out" / "env.txt").read_text()
    imports = "import ase, vesin, vesin_torch, e3nn, pydantic, safetensors, fairchem.core"
    complete = subprocess.run([sys.executable, "-c", imports], capture_output=True).returncode == 0
    if complete:
        assert not calls.exists()
    else:
        assert calls.read_text().split() == [f"{sys.version_info[0]}.{sys.version_info[1]}"]
