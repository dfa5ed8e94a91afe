"""Loader throughput: structures/s read through zoo.datasets from ASE-LMDB, extxyz and ASE SQLite.

    python -m benchmarks.loader_throughput                      # 10,000 generated structures
    python -m benchmarks.loader_throughput --structures 2000 --runs 3 --workers 2 --out out/loaders

The same structures (``zoo.datasets.random_structures``: 2-12 atoms, half periodic, energy, forces, stress,
tags, charges) are written once to each format. Each measurement is one full pass in a seeded random order
(the access pattern of training); ``open`` is the time to construct the dataset (extxyz parses every frame
then, the databases only list ids). Per format the median of ``--runs`` passes is reported, as structures/s and
as a ratio to extxyz; ``--workers N`` adds a pass through ``make_loader`` with N worker processes and batches of
``--batch-size``. With ``--out``, ``ratios.png`` beside the results shows the ratios as bars (``--no-plots``:
not written).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ase.db
import ase.io
import numpy as np

from benchmarks.workloads import write_results
from zoo.datasets.ase_db import AseDBDataset, AseLmdbWriter
from zoo.datasets.ase_files import AseReadDataset
from zoo.datasets.loaders import make_loader
from zoo.datasets.synthetic import random_structures
from zoo.plots import ratio_bars

BASELINE = "extxyz"


def write_formats(directory: Path, count: int) -> dict[str, Path]:
    """The same ``count`` structures as extxyz, ASE SQLite and ASE-LMDB files under ``directory``."""
    structures = random_structures(count, seed=0, periodic=True)
    paths = {
        "extxyz": directory / "data.extxyz",
        "sqlite": directory / "data.db",
        "aselmdb": directory / "data.aselmdb",
    }
    ase.io.write(paths["extxyz"], structures)
    with ase.db.connect(paths["sqlite"]) as db:
        for atoms in structures:
            db.write(atoms)
    with AseLmdbWriter(paths["aselmdb"]) as db:
        for atoms in structures:
            db.write(atoms)
    return paths


def openers(paths: dict[str, Path]) -> dict[str, Callable[[], object]]:
    return {
        "extxyz": lambda: AseReadDataset(paths["extxyz"]),
        "sqlite": lambda: AseDBDataset(paths["sqlite"]),
        "aselmdb": lambda: AseDBDataset(paths["aselmdb"]),
    }


def one_pass(dataset: object, order: np.ndarray) -> float:
    start = time.perf_counter()
    for index in order.tolist():
        dataset[index]
    return time.perf_counter() - start


def loader_pass(dataset: object, workers: int, batch_size: int) -> float:
    loader = make_loader(dataset, batch_size=batch_size, num_workers=workers, seed=0)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    results: dict = {"structures": args.structures, "runs": args.runs, "formats": {}}
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_formats(Path(scratch), args.structures)
        order = np.random.default_rng(0).permutation(args.structures)
        for name, opener in openers(paths).items():
            start = time.perf_counter()
            dataset = opener()
            opened = time.perf_counter() - start
            one_pass(dataset, order[: min(200, args.structures)])  # warm-up
            seconds = statistics.median(one_pass(dataset, order) for _ in range(args.runs))
            entry = {"open_s": opened, "pass_s": seconds, "structures_per_s": args.structures / seconds}
            if args.workers:
                loader_seconds = statistics.median(
                    loader_pass(dataset, args.workers, args.batch_size) for _ in range(args.runs)
                )
                entry["loader_structures_per_s"] = args.structures / loader_seconds
            entry["file_mb"] = paths[name].stat().st_size / 1e6
            results["formats"][name] = entry
    base = results["formats"][BASELINE]
    for entry in results["formats"].values():
        entry["ratio"] = entry["structures_per_s"] / base["structures_per_s"]
        if "loader_structures_per_s" in entry:
            entry["loader_ratio"] = entry["loader_structures_per_s"] / base["loader_structures_per_s"]
    return results


def markdown(results: dict) -> str:
    loader = any("loader_ratio" in entry for entry in results["formats"].values())
    head = "| format | file MB | open s | structures/s | vs extxyz |" + (
        " loader structures/s | vs extxyz |" if loader else ""
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, entry in results["formats"].items():
        row = (
            f"| {name} | {entry['file_mb']:.1f} | {entry['open_s']:.2f} | {entry['structures_per_s']:.0f} | "
            f"{entry['ratio']:.2f}x |"
        )
        if loader:
            row += f" {entry['loader_structures_per_s']:.0f} | {entry['loader_ratio']:.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def plot(results: dict, out: Path) -> Path:
    """``out/ratios.png``: structures/s of each format over extxyz, one pass and through the loader."""
    ratios = {
        name: {"one pass": entry["ratio"], **({"loader": entry["loader_ratio"]} if "loader_ratio" in entry else {})}
        for name, entry in results["formats"].items()
    }
    path = out / "ratios.png"
    title = f"loader throughput, {results['structures']} structures (median of {results['runs']} passes)"
    ratio_bars(ratios, path, title=title, ylabel=f"structures/s over {BASELINE}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="passes per format; the median is reported")
    parser.add_argument("--workers", type=int, default=0, help="also time make_loader with this many workers")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, help="directory for results.json, results.md and ratios.png")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="do not write ratios.png")
    args = parser.parse_args(argv)
    results = run(args)
    table = markdown(results)
    print(f"{args.structures} structures, median of {args.runs} passes in random order\n\n{table}")
    if args.out is not None:
        write_results(args.out, results, table)
        if args.plots:
            print(f"plot: {plot(results, args.out)}")
    return results


if __name__ == "__main__":
    main()
