"""Make the N-body golden fixture ``tests/datasets/fixtures/nbody_golden.npz`` from the official simulators.

Runs the official ``ChargedParticlesSim`` (vgsatorras/egnn, ``n_body_system/dataset/synthetic_sim.py``) and
SEGNN's ``GravitySim`` (RobDHess/Steerable-E3-GNN, ``nbody/dataset/synthetic_sim.py``, the simulator of SEGNO's
gravity set) exactly as their ``generate_dataset.py`` scripts do: ``np.random.seed(seed)``, then one
``sample_trajectory`` call per trajectory, stacked. The sources are read from bare git clones with ``git show``
into a temporary folder; nothing of them is copied into zoo.

The fixture also records the machine's rounding of the primitives the simulators depend on (``np.power`` with
exponents 1.5 and -1.5, BLAS ``syrk`` for ``A.T @ A`` and ``gemv``): numpy's SIMD ``power`` and the BLAS kernels
differ between CPUs, and so do the official simulators' outputs. The test compares bit for bit only where these
probes agree.

Usage::

    python scripts/golden/make_nbody_golden.py --egnn-repo PATH/egnn.git --segnn-repo PATH/Steerable-E3-GNN.git
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "datasets" / "fixtures" / "nbody_golden.npz"
EGNN_SIM = "n_body_system/dataset/synthetic_sim.py"
SEGNN_SIM = "nbody/dataset/synthetic_sim.py"

# name -> simulator and arguments. "charged_paper"/"gravity_paper" are the first trajectories of the paper sets
# (seed 43, length 5000, every 100 steps); "charged_walls" has 40 particles (initial spread 2), so the walls
# reflect some initial positions, and near-zero initial velocities (--initial_vel 0).
CASES = {
    "charged_paper": {
        "kind": "charged",
        "num": 3,
        "seed": 43,
        "length": 5000,
        "sample_freq": 100,
        "n_balls": 5,
        "initial_vel": True,
    },
    "charged_walls": {
        "kind": "charged",
        "num": 2,
        "seed": 2,
        "length": 50,
        "sample_freq": 10,
        "n_balls": 40,
        "initial_vel": False,
    },
    "gravity_paper": {"kind": "gravity", "num": 3, "seed": 43, "length": 5000, "sample_freq": 100, "n_balls": 5},
}


def load_official(repo: Path, path: str, folder: Path, name: str) -> types.ModuleType:
    """Import ``path`` at ``HEAD`` of the bare git repository ``repo`` as module ``name`` (matplotlib stubbed:
    the simulators import pyplot only for their ``__main__`` plots)."""
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout
    file = folder / f"{name}.py"
    file.write_text(source)
    stub = types.ModuleType("matplotlib")
    stub.pyplot = types.ModuleType("matplotlib.pyplot")
    saved = {key: sys.modules.get(key) for key in ("matplotlib", "matplotlib.pyplot")}
    sys.modules.update({"matplotlib": stub, "matplotlib.pyplot": stub.pyplot})
    try:
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def run_official(egnn: types.ModuleType, segnn: types.ModuleType, case: dict) -> dict[str, np.ndarray]:
    """The arrays the official ``generate_dataset.py`` would save for ``case`` as its training split."""
    if case["kind"] == "charged":
        with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints loc_std
            sim = egnn.ChargedParticlesSim(
                noise_var=0.0, n_balls=case["n_balls"], vel_norm=0.5 if case["initial_vel"] else 1e-16
            )
        names = ("loc", "vel", "edges", "charges")
    else:
        sim = segnn.GravitySim(noise_var=0.0, n_balls=case["n_balls"], vel_norm=0.5)
        names = ("loc", "vel", "forces", "mass")
    np.random.seed(case["seed"])  # noqa: NPY002 - the official scripts seed the global legacy stream
    with np.errstate(invalid="ignore"):  # the official power of the zero diagonal distances warns
        trajectories = [
            sim.sample_trajectory(T=case["length"], sample_freq=case["sample_freq"]) for _ in range(case["num"])
        ]
    return {name: np.stack(arrays) for name, arrays in zip(names, zip(*trajectories, strict=True), strict=True)}


def platform_probe() -> dict[str, np.ndarray]:
    """Inputs and this machine's outputs of the rounding-sensitive primitives the simulators use."""
    rng = np.random.RandomState(0)
    positive = np.exp(rng.uniform(-6.0, 6.0, 1024))
    matrices = rng.standard_normal((64, 3, 5))
    squares = rng.standard_normal((64, 5, 5))
    ones = np.ones((5, 1))
    return {
        "probe.positive": positive,
        "probe.power_1.5": np.power(positive, 1.5),
        "probe.power_-1.5": positive ** (-1.5),
        "probe.matrices": matrices,
        "probe.syrk": np.stack([m.T.dot(m) for m in matrices]),
        "probe.squares": squares,
        "probe.gemv": np.stack([s @ ones for s in squares]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--egnn-repo", type=Path, default=Path("/work/.mirror/vgsatorras+egnn/repo"))
    parser.add_argument("--segnn-repo", type=Path, default=Path("/work/.mirror/RobDHess+Steerable-E3-GNN/repo"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        egnn = load_official(args.egnn_repo, EGNN_SIM, Path(folder), "egnn_synthetic_sim")
        segnn = load_official(args.segnn_repo, SEGNN_SIM, Path(folder), "segnn_synthetic_sim")
        arrays: dict[str, np.ndarray] = {}
        for name, case in CASES.items():
            for key, value in run_official(egnn, segnn, case).items():
                arrays[f"{name}.{key}"] = value

    def head(repo: Path) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()

    provenance = {
        "cases": CASES,
        "sources": {
            "vgsatorras/egnn": {"commit": head(args.egnn_repo), "path": EGNN_SIM},
            "RobDHess/Steerable-E3-GNN": {"commit": head(args.segnn_repo), "path": SEGNN_SIM},
        },
        "numpy": np.__version__,
    }
    arrays.update(platform_probe())
    arrays["provenance"] = np.array(json.dumps(provenance))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
