"""Energy and force errors of a potential on labelled structures (the figures in a potential's card).

python scripts/evaluate_potential.py --model egnn-emt-demo data/emt-demo/test.extxyz
"""

from __future__ import annotations

import argparse
import json

import ase.io
import numpy as np

from zoo.api import load
from zoo.calculators.predict import predict


def evaluate(model_name: str, paths: list[str]) -> dict[str, float]:
    """MAE and RMSE of energy per atom (eV/atom) and force components (eV/Å) against the files' labels."""
    structures = [atoms for path in paths for atoms in ase.io.read(path, index=":")]
    results = predict(load(model_name), structures, batch_size=16, stress=False)
    energy_error = np.array(
        [(r["energy"] - a.get_potential_energy()) / len(a) for r, a in zip(results, structures, strict=True)]
    )
    force_error = np.concatenate(
        [(r["forces"] - a.get_forces()).ravel() for r, a in zip(results, structures, strict=True)]
    )
    return {
        "structures": len(structures),
        "energy_mae_per_atom": float(np.abs(energy_error).mean()),
        "energy_rmse_per_atom": float(np.sqrt((energy_error**2).mean())),
        "forces_mae": float(np.abs(force_error).mean()),
        "forces_rmse": float(np.sqrt((force_error**2).mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    print(json.dumps(evaluate(args.model, args.files), indent=2))


if __name__ == "__main__":
    main()
