"""EDM sampling throughput: zoo against the official code (ehoogeboom/e3_diffusion_for_molecules), same weights.

The official modules (``qm9/models.py``, ``egnn/``, ``equivariant_diffusion/``; torch and numpy only) are imported
from a checkout given on the command line; nothing of them is copied into zoo::

    OMP_NUM_THREADS=1 python -m benchmarks.edm_sampling /tmp/edm_official --molecules 20 --timesteps 50

Configuration: ``EnVariationalDiffusion`` built as ``qm9/models.py:get_model`` builds it from ``--layers``,
``--hidden`` and ``--timesteps`` (QM9 with hydrogens: H, C, N, O, F one-hot + charges, attention, tanh,
polynomial_2 schedule, normalize_factors [1, 4, 10]; default 4 layers of 64 features, the edm-demo shape). Its
random initial weights are loaded into ``zoo.create_model("edm", ...)`` with ``strict=True``, so both run the
same network. Molecule sizes are drawn once from the QM9 histogram (seeded) and both sample the same padded batch.

Timed calls (``torch.no_grad()``, float32, one molecule batch of ``--molecules``): the official
``EnVariationalDiffusion.sample(n, max_nodes, node_mask, edge_mask, None)``; zoo's ``EDM.sample_dense(node_mask)``
(the same tensors out) and ``EDM.sample(n, n_atoms=sizes)`` (plus the conversion to ``ase.Atoms``). Every
implementation runs once per round, rounds interleaved, median of ``--runs`` rounds after ``--warmup``. Printed:
seconds per batch, molecules/s and the ratio zoo / official in molecules/s (> 1: zoo faster).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

import zoo
from zoo.models.edm import QM9_N_NODES

SPECIES = ["H", "C", "N", "O", "F"]


def official_model(layers: int, hidden: int, timesteps: int) -> torch.nn.Module:
    """The official ``EnVariationalDiffusion`` for QM9 with hydrogens, as ``qm9/models.py:get_model`` builds it."""
    from qm9 import models as qm9_models

    args = SimpleNamespace(
        model="egnn_dynamics",
        probabilistic_model="diffusion",
        condition_time=True,
        aggregation_method="sum",
        diffusion_steps=timesteps,
        diffusion_noise_schedule="polynomial_2",
        diffusion_noise_precision=1e-5,
        diffusion_loss_type="l2",
        conditioning=[],
        nf=hidden,
        n_layers=layers,
        inv_sublayers=1,
        attention=True,
        tanh=True,
        norm_constant=1,
        sin_embedding=False,
        normalization_factor=1,
        include_charges=True,
        context_node_nf=0,
        normalize_factors=[1, 4, 10],
    )
    dataset_info = {"n_nodes": QM9_N_NODES, "atom_decoder": SPECIES}
    model, _, _ = qm9_models.get_model(args, "cpu", dataset_info, None)
    return model.eval()


def median_seconds(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, float]:
    """Median wall seconds per call of each function over interleaved rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="checkout of ehoogeboom/e3_diffusion_for_molecules")
    parser.add_argument("--molecules", type=int, default=20, help="molecules per sampled batch")
    parser.add_argument("--timesteps", type=int, default=50, help="diffusion steps T")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    official = official_model(args.layers, args.hidden, args.timesteps)
    model = zoo.create_model(
        "edm",
        species=[1, 6, 7, 8, 9],
        hidden_nf=args.hidden,
        n_layers=args.layers,
        timesteps=args.timesteps,
        norm_values=(1.0, 4.0, 10.0),
    ).eval()
    model.load_state_dict(official.state_dict(), strict=True)

    sizes_table = list(QM9_N_NODES)
    weights = torch.tensor([QM9_N_NODES[k] for k in sizes_table], dtype=torch.float64)
    picks = torch.multinomial(weights, args.molecules, replacement=True, generator=torch.Generator().manual_seed(0))
    sizes = [sizes_table[i] for i in picks.tolist()]
    n, size = len(sizes), max(sizes)
    node_mask = (torch.arange(size)[None, :] < torch.tensor(sizes)[:, None]).float()[..., None]
    edge_mask = node_mask[:, None, :, 0] * node_mask[:, :, None, 0] * (1 - torch.eye(size))[None]
    edge_mask = edge_mask.reshape(n * size * size, 1)

    def run_official() -> None:
        with torch.no_grad():
            official.sample(n, size, node_mask, edge_mask, None)

    def run_zoo_dense() -> None:
        model.sample_dense(node_mask)

    def run_zoo_atoms() -> None:
        model.sample(n, n_atoms=sizes, seed=0, batch_size=n)

    seconds = median_seconds(
        {"official": run_official, "zoo sample_dense": run_zoo_dense, "zoo sample (ase.Atoms)": run_zoo_atoms},
        args.runs,
        args.warmup,
    )
    print(
        f"EDM sampling, {n} molecules ({sum(sizes)} atoms, max {size}), T={args.timesteps}, {args.layers} layers x "
        f"{args.hidden}, float32, {args.threads} thread(s), torch {torch.__version__}, {platform.processor() or 'cpu'}"
    )
    print(f"{'implementation':<26}{'s/batch':>10}{'molecules/s':>14}{'ratio vs official':>20}")
    for name, value in seconds.items():
        ratio = seconds["official"] / value
        print(f"{name:<26}{value:>10.3f}{n / value:>14.2f}{ratio:>20.2f}")


if __name__ == "__main__":
    main()
