"""Test MSE of an N-body dynamics model on a split of N-body trajectories (the figure in a dynamics model's card).

Works for any model that takes a batch of :class:`zoo.datasets.NBodyDataset` graphs and returns
``{"pos": [N, 3]}`` (EGNN, SEGNO, FA-GNN, ...). The MSE is the mean over all coordinates of all particles of
all trajectories, the official ``nn.MSELoss`` averaged over test batches (every trajectory has the same number
of particles). Prints JSON.

python scripts/evaluate_nbody.py fa-gnn-nbody-charged --root data/nbody/paper --split test
python scripts/evaluate_nbody.py runs/fa-gnn-nbody-charged/model --root data/nbody/fresh --split test
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

import zoo
from zoo.datasets import NBodyDataset
from zoo.graph import batch_graphs

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def evaluate(
    model: str | torch.nn.Module,
    root: str,
    split: str = "test",
    *,
    kind: str = "charged",
    frame_0: int | None = None,
    frame_T: int | None = None,
    max_samples: int | None = None,
    batch_size: int = 100,
    dtype: str = "float32",
) -> dict[str, Any]:
    """MSE (and MAE) of the predicted positions ``model(batch)["pos"]`` against ``pos_target``.

    Args:
        model: a name :func:`zoo.load` takes (card name, alias, checkpoint directory) or a loaded module.
        root: folder with the ``.npy`` files of :func:`zoo.datasets.generate_nbody_dataset`.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        kind, frame_0, frame_T: as in :class:`~zoo.datasets.NBodyDataset` (default: the 1,000-step task).
        max_samples: the first trajectories only (``None``: the whole split; for ``train`` the first 3,000).
        batch_size: trajectories per forward pass (the result does not depend on it).
        dtype: ``"float32"`` or ``"float64"``: the model and the data are cast to it.

    Returns:
        ``{"model", "root", "split", "trajectories", "particles", "mse", "mae", "seconds"}``.
    """
    name = model if isinstance(model, str) else type(model).__name__
    module = zoo.load(model) if isinstance(model, str) else model
    torch_dtype = _DTYPES[dtype]
    module = module.to(torch_dtype).eval()
    data = NBodyDataset(
        root, split, kind=kind, frame_0=frame_0, frame_T=frame_T, max_samples=max_samples, dtype=torch_dtype
    )
    square = absolute = 0.0
    count = particles = 0
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(data), batch_size):
            batch = batch_graphs([data[i] for i in range(first, min(first + batch_size, len(data)))])
            error = module(batch)["pos"] - batch.pos_target
            square += float(error.double().square().sum())
            absolute += float(error.double().abs().sum())
            count += error.numel()
            particles += error.shape[0]
    return {
        "model": name,
        "root": str(root),
        "split": data.split,
        "frames": [data.frame_0, data.frame_T],
        "trajectories": len(data),
        "particles": particles,
        "mse": square / count,
        "mae": absolute / count,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="card name, alias or checkpoint directory")
    parser.add_argument("--root", required=True, help="folder with the N-body .npy files")
    parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--kind", default="charged", choices=["charged", "gravity"])
    parser.add_argument("--frame-0", type=int, default=None, help="input frame (default: the 1,000-step task)")
    parser.add_argument("--frame-T", type=int, default=None, help="target frame (default: the 1,000-step task)")
    parser.add_argument("--max-samples", type=int, default=None, help="first trajectories only")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    args = parser.parse_args()
    result = evaluate(
        args.model,
        args.root,
        args.split,
        kind=args.kind,
        frame_0=args.frame_0,
        frame_T=args.frame_T,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
