"""Train the official N-body models with their own code and recipe, then score them on fresh data.

The cards of ``egnn-nbody-charged``, ``segno-nbody-charged`` and ``fa-gnn-nbody-charged`` compare zoo's weights
with the papers' numbers, which were measured on the seed-43 test split. This script answers the question those
numbers leave open: what does the *official* model, trained with the *official* loop, score on fresh test sets?

The official repositories are imported from checkouts given on the command line (nothing of them is copied into
zoo); their model classes, data loaders and per-epoch ``train``/``run_epoch`` functions run unchanged, with the
arguments of their READMEs. The loop around them is the official one (validation and test every 5 epochs,
test reported at the best validation epoch) and additionally keeps the best-validation weights, which are
then evaluated by the official code on the test splits of ``--fresh`` data sets (zoo's generator, other seeds).

- ``egnn``: vgsatorras/egnn ``main_nbody.py --model egnn_vel --max_training_samples 3000 --lr 5e-4`` (4 layers,
  64 features, Adam, weight decay 1e-12, batch 100).
- ``fa-gnn``: omri1348/Frame-Averaging ``nbody/nbody.py --nf 60 --lr 1e-3`` (its ``torch.symeig`` is mapped to
  ``torch.linalg.eigh``, its GPU picker ``GPUtil`` stubbed: CPU).
- ``segno``: yliukj/SEGNO ``N-body/main.py --layers 8 --hidden_features 64 --lr 5e-3 --target short --dataset
  charged`` (seeded 41 as its ``main.py``).

Usage (data: ``zoo.datasets.generate_nbody_dataset('data/nbody/paper', seed=43)`` and fresh sets as in the cards)::

    git -C /work/.mirror/vgsatorras+egnn/repo archive HEAD | tar -x -C /tmp/egnn_official
    OMP_NUM_THREADS=1 python scripts/reference/official_nbody.py egnn /tmp/egnn_official --epochs 600 \\
        --paper data/nbody/paper --fresh data/nbody/fresh-2027 ... data/nbody/fresh-2031 --out out/official-egnn

Writes ``<out>.pt`` (best weights, refreshed at every improvement) and ``<out>.json`` (validation, paper test and
fresh test MSE of the best-validation weights).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import random
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

SUFFIX = "_charged5_initvel1small.npy"


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@functools.cache
def _dataset_dir(data: Path) -> Path:
    """A directory whose ``n_body_system/dataset`` holds links to ``data``'s files (the EGNN and FA loaders read
    that path relative to the working directory); made once per data folder."""
    root = Path(tempfile.mkdtemp(prefix="nbody-official-"))
    target = root / "n_body_system" / "dataset"
    target.mkdir(parents=True)
    for file in data.glob("*" + SUFFIX):
        (target / file.name).symlink_to(file.resolve())
    return root


class Official:
    """The official model, its per-epoch function and a loader factory for one data directory."""

    def __init__(self, which: str, checkout: Path) -> None:
        self.which = which
        torch.set_num_threads(1)
        if which == "segno":
            sys.path.insert(0, str(checkout / "N-body"))
            random.seed(41), np.random.seed(41), torch.manual_seed(41)  # noqa: NPY002 - main.py's seed()
            from models.model import SEGNO
            from nbody.dataset_nbody import NBodyDataset
            from nbody.train_nbody import run_epoch

            self.model = SEGNO(1, 2, 64, device="cpu", n_layers=8, recurrent=True, norm_diff=False, tanh=False)
            self.lr = 5e-3
            args = argparse.Namespace(batch_size=100, time_exp=False)
            mse = torch.nn.MSELoss()

            def epoch(optimizer, index, loader, backprop):
                return run_epoch(self.model, optimizer, mse, index, loader, [30, 40], "cpu", args, backprop)[0]

            self._dataset = lambda data, part, **kw: NBodyDataset(part, dataset_name=str(data.resolve()), **kw)
        else:
            folder = checkout if which == "egnn" else checkout / "nbody"
            sys.path.insert(0, str(folder))
            if which == "egnn":
                sys.argv = ["main_nbody.py", "--no-cuda", "--model", "egnn_vel", "--max_training_samples", "3000"]
                with _cwd(Path(tempfile.mkdtemp())):  # it creates a log folder at import
                    import main_nbody as module
                from n_body_system.model import EGNN_vel

                self.model = EGNN_vel(1, 2, 64, device="cpu", n_layers=4, recurrent=True)
            else:
                torch.symeig = lambda a, eigenvectors=False, upper=True: torch.linalg.eigh(a, "U" if upper else "L")
                sys.modules["GPUtil"] = types.SimpleNamespace(getAvailable=lambda **kwargs: [0])
                sys.argv = ["nbody.py", "--no-cuda", "--nf", "60", "--lr", "1e-3"]
                with _cwd(Path(tempfile.mkdtemp())):  # it creates a log folder at import
                    import nbody as module
                from n_body_system.model_FA import FA_GNN

                self.model = FA_GNN(6, 60, device="cpu", n_layers=4, recurrent=True)
            from n_body_system.dataset_nbody import NBodyDataset

            self.lr = module.args.lr

            def epoch(optimizer, index, loader, backprop):
                return module.train(self.model, optimizer, index, loader, backprop=backprop)

            def dataset(data, part, **kw):
                with _cwd(_dataset_dir(data.resolve())):
                    return NBodyDataset(partition=part, dataset_name="nbody_small", **kw)

            self._dataset = dataset
        self.epoch: Callable = epoch

    def loader(self, data: Path, part: str) -> torch.utils.data.DataLoader:
        train = part == "train"
        dataset = self._dataset(data, part, max_samples=3000) if train else self._dataset(data, part)
        return torch.utils.data.DataLoader(dataset, batch_size=100, shuffle=train, drop_last=train)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["egnn", "fa-gnn", "segno"])
    parser.add_argument("checkout", type=Path, help="checkout of the official repository")
    parser.add_argument("--paper", type=Path, required=True, help="the seed-43 data set (train/valid/test)")
    parser.add_argument("--fresh", type=Path, nargs="*", default=[], help="data sets whose test split to score")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output prefix (.pt, .json)")
    args = parser.parse_args(argv)
    official = Official(args.which, args.checkout.resolve())
    model = official.model
    train, valid, test = (official.loader(args.paper, part) for part in ("train", "val", "test"))
    optimizer = torch.optim.Adam(model.parameters(), lr=official.lr, weight_decay=1e-12)
    best, best_state, start = (float("inf"), float("inf"), -1), None, time.time()
    for epoch in range(args.epochs):
        official.epoch(optimizer, epoch, train, True)
        if epoch % 5 == 0 and (epoch > 0 or args.which != "segno"):
            val, tst = official.epoch(optimizer, epoch, valid, False), official.epoch(optimizer, epoch, test, False)
            if val < best[0]:
                best, best_state = (val, tst, epoch), copy.deepcopy(model.state_dict())
                torch.save({"state": best_state, "best": best}, args.out.with_suffix(".pt"))
            print(f"*** epoch {epoch}: best val {best[0]:.5f}, test {best[1]:.5f} at {best[2]}, "
                  f"{time.time() - start:.0f} s", flush=True)  # fmt: skip
    model.load_state_dict(best_state)
    result = {"which": args.which, "epochs": args.epochs, "best_val": best[0], "paper_test": best[1]}
    result.update(best_epoch=best[2], fresh={})
    for data in args.fresh:
        result["fresh"][str(data)] = official.epoch(optimizer, 0, official.loader(data, "test"), False)
    if args.fresh:
        result["fresh_mean"] = sum(result["fresh"].values()) / len(args.fresh)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
