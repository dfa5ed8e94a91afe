"""Make the SEGNO golden fixtures ``tests/fixtures/segno/*.safetensors`` with the official code (yliukj/SEGNO, MIT).

The official modules are imported from a checkout given on the command line; nothing of them is copied into zoo.
Every parameter is redrawn from a seeded normal distribution (weights N(0, 1/fan_in), biases N(0, 0.1^2)) in
float64 and the models run on fixed inputs prepared as the official training scripts prepare them. Each file
holds the inputs, the official ``state_dict`` (keys prefixed by the case name) and the outputs (positions, and
the velocities after the last step, and for MD22 the features, taken by running the official forward's loop),
with the zoo constructor arguments and the source revision as JSON in the safetensors metadata
(``golden``). No pickle is involved.

* ``nbody.safetensors``: ``N-body/models/model.py`` ``SEGNO`` as ``N-body/main.py`` builds it for the charged
  set (``in_edge_nf=2``) and the gravity set (``in_edge_nf=1``; its ``knn_graph(k=4)`` on 5 particles is the
  complete graph), width 16, 8 steps. The official mean is a hard-coded 500 x 2000 matrix, so the batch is the
  official one: 100 systems of 5 particles.
* ``md22.safetensors``: ``MD22/spatial_graph/n_body_system/model.py`` ``SEGNO`` as ``main_md22.py`` builds it
  (``in_node_nf=2``, ``in_edge_nf=5``, 5 steps), width 16, on 2 frames of ethanol with the bond graph of
  ``md22/dataset.py`` (pairs closer than 2.5 A in the first frame).

Usage::

    mkdir -p /tmp/segno_official
    git -C /work/.mirror/yliukj+SEGNO/repo archive HEAD N-body MD22/spatial_graph/models \\
        MD22/spatial_graph/n_body_system | tar -x -C /tmp/segno_official
    python scripts/golden/make_segno_golden.py /tmp/segno_official \\
        --revision $(git -C /work/.mirror/yliukj+SEGNO/repo rev-parse HEAD)
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

import torch
from ase.build import molecule
from safetensors.torch import save_file
from torch import nn

OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "segno"


def randomise(module: nn.Module, seed: int) -> None:
    """Redraw every parameter: weights N(0, 1/fan_in), biases N(0, 0.01)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(noise / math.sqrt(param.shape[1]) if param.dim() == 2 else 0.1 * noise)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value.detach().clone().contiguous() for key, value in tensors.items()}


def run_steps(model: nn.Module, nodes, loc, edges, vel, edge_attr):
    """The official ``SEGNO.forward`` loop, returning the last features and velocities too."""
    h = model.embedding(nodes)
    x, v = loc, vel
    for _ in range(model.n_layers):
        h, x, v, _ = model.module(h, edges, x, v, v, edge_attr=edge_attr)
    return h, x, v


def complete_edges(batch_size: int, n_nodes: int) -> list[torch.Tensor]:
    """The official ``get_edges``: all ordered pairs i != j of each system, ``[rows (target), cols (source)]``."""
    rows, cols = [], []
    for system in range(batch_size):
        for i in range(n_nodes):
            for j in range(n_nodes):
                if i != j:
                    rows.append(system * n_nodes + i)
                    cols.append(system * n_nodes + j)
    return [torch.tensor(rows), torch.tensor(cols)]


def nbody_cases(checkout: Path) -> tuple[dict[str, torch.Tensor], dict]:
    sys.path.insert(0, str(checkout / "N-body"))
    segno_model = importlib.import_module("models.model")
    generator = torch.Generator().manual_seed(4)
    batch_size, n_nodes, hidden = 100, 5, 16  # the shape hard-coded in the official unsorted_segment_mean
    loc = torch.randn(batch_size * n_nodes, 3, generator=generator)
    vel = 0.5 * torch.randn(batch_size * n_nodes, 3, generator=generator)
    charges = torch.where(torch.rand(batch_size * n_nodes, 1, generator=generator) < 0.5, -1.0, 1.0)
    edges = complete_edges(batch_size, n_nodes)
    rows, cols = edges
    # nbody/train_nbody.py and train_gravity.py
    nodes = torch.sqrt(torch.sum(vel**2, dim=1)).unsqueeze(1)
    loc_dist = torch.sum((loc[rows] - loc[cols]) ** 2, 1).unsqueeze(1)
    edge_attrs = {"charged": torch.cat([charges[rows] * charges[cols], loc_dist], 1), "gravity": loc_dist}
    tensors = prefixed("input", {"loc": loc, "vel": vel, "charges": charges})
    configs = {}
    for seed, (name, edge_attr) in enumerate(edge_attrs.items(), start=40):
        model = segno_model.SEGNO(
            in_node_nf=1,
            in_edge_nf=edge_attr.shape[1],
            hidden_nf=hidden,
            n_layers=8,
            recurrent=True,
            norm_diff=False,
            tanh=False,
        )
        randomise(model, seed)
        model.eval()
        with torch.no_grad():
            loc_pred, h_pred = model(nodes, loc.clone(), edges, vel, edge_attr)
            h, x, v = run_steps(model, nodes, loc.clone(), edges, vel, edge_attr)
        assert torch.equal(x, loc_pred) and torch.equal(h, h_pred)
        tensors.update(prefixed(f"{name}.state", model.state_dict()))
        tensors.update(prefixed(f"{name}.output", {"loc": x, "vel": v}))
        configs[name] = {"features": name, "hidden_nf": hidden, "n_layers": 8, "n_nodes": n_nodes}
    sys.path.remove(str(checkout / "N-body"))
    for module in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[module]
    return tensors, configs


def md22_case(checkout: Path) -> tuple[dict[str, torch.Tensor], dict]:
    sys.path.insert(0, str(checkout / "MD22" / "spatial_graph"))
    md22_model = importlib.import_module("n_body_system.model")
    generator = torch.Generator().manual_seed(5)
    atoms = molecule("CH3CH2OH")
    z = torch.tensor(atoms.numbers)
    n_nodes, batch_size, hidden, layers = len(atoms), 2, 16, 5
    frames = torch.tensor(atoms.positions) + 0.05 * torch.randn(batch_size, n_nodes, 3, generator=generator)
    # md22/dataset.py: bonds = pairs closer than 2.5 A in the first frame; edge_attr [z_i, z_j, 1] + stick 0
    rows, cols, bond_attr = [], [], []
    for i in range(n_nodes):
        for j in range(n_nodes):
            if i != j and float(torch.linalg.norm(frames[0, i] - frames[0, j])) < 2.5:
                rows.append(i)
                cols.append(j)
                bond_attr.append([float(z[i]), float(z[j]), 1.0, 0.0])
    rows, cols, bond_attr = torch.tensor(rows), torch.tensor(cols), torch.tensor(bond_attr)
    num_bonds = len(rows)
    edges = [
        torch.cat([rows + k * n_nodes for k in range(batch_size)]),
        torch.cat([cols + k * n_nodes for k in range(batch_size)]),
    ]
    loc = frames.reshape(-1, 3)
    vel = 0.02 * torch.randn(batch_size * n_nodes, 3, generator=generator)  # x[t + 1] - x[t] upstream
    big_z = z.double().repeat(batch_size).unsqueeze(1)
    # main_md22.py, model 'segno'
    nodes = torch.cat((torch.sqrt(torch.sum(vel**2, dim=1)).unsqueeze(1), big_z / big_z.max()), dim=-1)
    loc_dist = torch.sum((loc[edges[0]] - loc[edges[1]]) ** 2, 1).unsqueeze(1)
    edge_attr = torch.cat([bond_attr.repeat(batch_size, 1), loc_dist], 1)
    model = md22_model.SEGNO(
        in_node_nf=2,
        in_edge_nf=2 + 3,
        hidden_nf=hidden,
        n_layers=layers,
        recurrent=True,
        norm_diff=False,
        tanh=False,
    )
    randomise(model, 50)
    model.eval()
    with torch.no_grad():
        loc_pred = model(nodes, loc.clone(), edges, vel, edge_attr)
        h, x, v = run_steps(model, nodes, loc.clone(), edges, vel, edge_attr)
    assert torch.equal(x, loc_pred)
    tensors = prefixed("input", {"loc": loc, "vel": vel, "z": z, "bonds": torch.stack([cols, rows])})
    tensors.update(prefixed("state", model.state_dict()))
    tensors.update(prefixed("output", {"loc": x, "vel": v, "h": h}))
    print(f"md22: {n_nodes} atoms, {num_bonds} bonds per frame")
    return tensors, {"hidden_nf": hidden, "n_layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout (or git archive) of yliukj/SEGNO")
    parser.add_argument("--revision", default="unknown", help="commit of the checkout, recorded in the files")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    torch.set_default_dtype(torch.float64)  # also the dtype of the official hard-coded mean matrix
    args.output.mkdir(parents=True, exist_ok=True)
    source = f"yliukj/SEGNO@{args.revision}"
    for name, (tensors, config) in {"nbody": nbody_cases(checkout), "md22": md22_case(checkout)}.items():
        path = args.output / f"{name}.safetensors"
        # one metadata entry: safetensors writes several in random order, and the file would change
        save_file(tensors, str(path), metadata={"golden": json.dumps({"source": source, "config": config})})
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
