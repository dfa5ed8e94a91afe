"""Make the EGNN golden fixtures ``tests/fixtures/egnn/*.safetensors`` with the official code (vgsatorras/egnn, MIT).

The official modules are imported from a checkout given on the command line; nothing of them is copied into zoo.
Every parameter is redrawn from a seeded normal distribution (weights N(0, 1/fan_in), biases N(0, 0.1^2)) in
float64, so that all paths change the outputs (the official initialisation makes the coordinate updates ~1e-3),
and the modules run on small fixed inputs. Each file holds the inputs, the official ``state_dict`` (keys prefixed
by the case name) and the outputs, with the zoo constructor arguments of each case and the source revision as
JSON in the safetensors metadata (``golden``). No pickle is involved.

* ``egcl.safetensors``: the ``E_GCL`` layer (defaults, coordinates in 3-D, large enough that the +-100 clamp
  fires), ``E_GCL`` with every option (2-D), ``E_GCL_vel`` (5-D).
* ``nbody.safetensors``: ``n_body_system.model.EGNN_vel`` as ``main_nbody.py`` builds it (3 systems of 5
  particles, inputs prepared as in its ``train``), width 16.
* ``qm9.safetensors``: ``qm9.models.EGNN`` as ``main_qm9.py`` builds it (7 layers, attention), width 16, on a
  padded batch of 3 molecules with the official masks, adjacency and ``preprocess_input``; and a 2-layer model
  with ``node_attr=1``.

Usage::

    mkdir -p /tmp/egnn_official
    git -C /work/.mirror/vgsatorras+egnn/repo archive HEAD | tar -x -C /tmp/egnn_official
    python scripts/golden/make_egnn_golden.py /tmp/egnn_official \\
        --revision $(git -C /work/.mirror/vgsatorras+egnn/repo rev-parse HEAD)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "egnn"


def randomise(module: nn.Module, seed: int) -> None:
    """Redraw every parameter: weights N(0, 1/fan_in), biases N(0, 0.01)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(noise / math.sqrt(param.shape[1]) if param.dim() == 2 else 0.1 * noise)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value.detach().clone().contiguous() for key, value in tensors.items()}


def random_edges(num_nodes: int, num_edges: int, generator: torch.Generator, isolated: int) -> torch.Tensor:
    """Distinct directed edges without self-loops; node ``isolated`` receives none. ``[2, E]`` (source, target)."""
    pairs = [(j, i) for i in range(num_nodes) for j in range(num_nodes) if i != j and i != isolated]
    chosen = torch.randperm(len(pairs), generator=generator)[:num_edges]
    return torch.tensor([pairs[k] for k in sorted(chosen.tolist())]).T.contiguous()


def layer_cases(gcl) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Official ``E_GCL`` / ``E_GCL_vel`` on random graphs; returns tensors and zoo ``EGCL`` kwargs per case."""
    generator = torch.Generator().manual_seed(1)
    cases = {
        "default": {
            "official": lambda: gcl.E_GCL(16, 16, 16),
            "zoo": {"input_nf": 16, "output_nf": 16, "hidden_nf": 16},
            "dim": 3,
            "coord_scale": 12.0,
        },
        "options": {
            "official": lambda: gcl.E_GCL(
                8,
                12,
                16,
                edges_in_d=2,
                nodes_att_dim=3,
                act_fn=nn.SiLU(),
                recurrent=False,
                coords_weight=0.7,
                attention=True,
                norm_diff=True,
                tanh=True,
            ),
            "zoo": {
                "input_nf": 8,
                "output_nf": 12,
                "hidden_nf": 16,
                "edges_in_d": 2,
                "nodes_att_dim": 3,
                "act_fn": "silu",
                "residual": False,
                "coords_weight": 0.7,
                "attention": True,
                "norm_diff": True,
                "tanh": True,
            },
            "dim": 2,
            "coord_scale": 1.0,
        },
        "velocity": {
            "official": lambda: gcl.E_GCL_vel(16, 16, 16, edges_in_d=1, act_fn=nn.SiLU(), coords_weight=1.3),
            "zoo": {
                "input_nf": 16,
                "output_nf": 16,
                "hidden_nf": 16,
                "edges_in_d": 1,
                "act_fn": "silu",
                "coords_weight": 1.3,
                "velocity": True,
            },
            "dim": 5,
            "coord_scale": 1.0,
        },
    }
    tensors: dict[str, torch.Tensor] = {}
    configs: dict[str, dict] = {}
    for seed, (name, case) in enumerate(cases.items(), start=10):
        kwargs = case["zoo"]
        num_nodes = 7
        layer = case["official"]()
        randomise(layer, seed)
        layer.eval()
        edge_index = random_edges(num_nodes, 20, generator, isolated=num_nodes - 1)
        source, target = edge_index
        inputs = {
            "h": torch.randn(num_nodes, kwargs["input_nf"], generator=generator),
            "coord": case["coord_scale"] * torch.randn(num_nodes, case["dim"], generator=generator),
            "edge_index": edge_index,
        }
        extra = {}
        if kwargs.get("edges_in_d"):
            inputs["edge_attr"] = torch.randn(edge_index.shape[1], kwargs["edges_in_d"], generator=generator)
            extra["edge_attr"] = inputs["edge_attr"]
        if kwargs.get("nodes_att_dim"):
            inputs["node_attr"] = torch.randn(num_nodes, kwargs["nodes_att_dim"], generator=generator)
            extra["node_attr"] = inputs["node_attr"]
        official_edges = [target, source]  # the official code's (row = target i, col = source j)
        coord = inputs["coord"].clone()  # the official coord_model updates its input in place
        with torch.no_grad():
            if kwargs.get("velocity"):
                inputs["vel"] = torch.randn(num_nodes, case["dim"], generator=generator)
                h, coord, _ = layer(inputs["h"], official_edges, coord, inputs["vel"], **extra)
            else:
                h, coord, _ = layer(inputs["h"], official_edges, coord, **extra)
            radial, coord_diff = layer.coord2radial(official_edges, inputs["coord"])
            clamped = (
                coord_diff
                * layer.coord_mlp(
                    layer.edge_model(inputs["h"][target], inputs["h"][source], radial, extra.get("edge_attr"))
                )
            ).abs() > 100
        print(f"egcl/{name}: {int(clamped.sum())} of {clamped.numel()} coordinate terms clamped")
        tensors.update(prefixed(f"{name}.input", inputs))
        tensors.update(prefixed(f"{name}.state", layer.state_dict()))
        tensors.update(prefixed(f"{name}.output", {"h": h, "coord": coord}))
        configs[name] = kwargs
    return tensors, configs


def nbody_case(model_module) -> tuple[dict[str, torch.Tensor], dict]:
    """Official ``EGNN_vel`` as ``main_nbody.py`` builds it, inputs as its ``train`` prepares them."""
    generator = torch.Generator().manual_seed(2)
    batch_size, n_nodes, hidden = 3, 5, 16
    model = model_module.EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=hidden, n_layers=4, recurrent=True)
    randomise(model, 20)
    model.eval()
    loc = torch.randn(batch_size * n_nodes, 3, generator=generator)
    vel = 0.5 * torch.randn(batch_size * n_nodes, 3, generator=generator)
    charges = torch.where(torch.rand(batch_size * n_nodes, 1, generator=generator) < 0.5, -1.0, 1.0)
    rows, cols = [], []
    for system in range(batch_size):
        for i in range(n_nodes):
            for j in range(n_nodes):
                if i != j:
                    rows.append(system * n_nodes + i)
                    cols.append(system * n_nodes + j)
    rows, cols = torch.tensor(rows), torch.tensor(cols)
    # main_nbody.py, model 'egnn_vel': nodes = |v|; edge_attr = [q_i q_j (the dataset's edges), |x_i - x_j|^2]
    nodes = torch.sqrt(torch.sum(vel**2, dim=1)).unsqueeze(1)
    loc_dist = torch.sum((loc[rows] - loc[cols]) ** 2, 1).unsqueeze(1)
    edge_attr = torch.cat([charges[rows] * charges[cols], loc_dist], 1)
    with torch.no_grad():
        loc_pred = model(nodes, loc.clone(), [rows, cols], vel, edge_attr)
    tensors = prefixed("input", {"loc": loc, "vel": vel, "charges": charges})
    tensors.update(prefixed("state", model.state_dict()))
    tensors.update(prefixed("output", {"loc": loc_pred}))
    return tensors, {"features": "charged", "hidden_nf": hidden, "n_layers": 4, "n_nodes": n_nodes}


def qm9_cases(qm9_models, qm9_utils) -> tuple[dict[str, torch.Tensor], dict]:
    """Official QM9 ``EGNN`` on a padded batch with the official masks, adjacency and input features."""
    generator = torch.Generator().manual_seed(3)
    species = torch.tensor([1, 6, 7, 8, 9])
    sizes = [5, 3, 4]
    n_nodes = max(sizes)
    batch_size = len(sizes)
    charges = torch.zeros(batch_size, n_nodes)
    positions = torch.zeros(batch_size, n_nodes, 3)
    for index, size in enumerate(sizes):
        charges[index, :size] = species[torch.randint(0, 5, (size,), generator=generator)].double()
        positions[index, :size] = 1.2 * torch.randn(size, 3, generator=generator)
    # qm9/data/collate.py: atom mask, edge mask without the diagonal
    atom_mask = charges > 0
    edge_mask = atom_mask.unsqueeze(1) * atom_mask.unsqueeze(2)
    edge_mask *= ~torch.eye(n_nodes, dtype=torch.bool).unsqueeze(0)
    edge_mask = edge_mask.view(batch_size * n_nodes * n_nodes, 1).double()
    one_hot = charges.unsqueeze(-1) == species.double().unsqueeze(0).unsqueeze(0)
    charge_scale = species.max()  # the dataset's max_charge
    nodes = qm9_utils.preprocess_input(one_hot.double(), charges, 2, charge_scale, "cpu")
    nodes = nodes.view(batch_size * n_nodes, -1)
    edges = qm9_utils.get_adj_matrix(n_nodes, batch_size, "cpu")
    tensors = prefixed("input", {"charges": charges, "positions": positions})
    configs = {}
    for seed, (name, hidden, layers, node_attr) in enumerate([("paper", 16, 7, 0), ("node_attr", 8, 2, 1)], 30):
        model = qm9_models.EGNN(
            in_node_nf=15,
            in_edge_nf=0,
            hidden_nf=hidden,
            n_layers=layers,
            coords_weight=1.0,
            attention=1,
            node_attr=node_attr,
        )
        randomise(model, seed)
        model.eval()
        with torch.no_grad():
            pred = model(
                h0=nodes,
                x=positions.view(batch_size * n_nodes, -1).clone(),
                edges=edges,
                edge_attr=None,
                node_mask=atom_mask.view(batch_size * n_nodes, -1).double(),
                edge_mask=edge_mask,
                n_nodes=n_nodes,
            )
        tensors.update(prefixed(f"{name}.state", model.state_dict()))
        tensors.update(prefixed(f"{name}.output", {"pred": pred}))
        configs[name] = {"hidden_nf": hidden, "n_layers": layers, "node_attr": bool(node_attr)}
    return tensors, configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout (or git archive) of vgsatorras/egnn")
    parser.add_argument("--revision", default="unknown", help="commit of the checkout, recorded in the files")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    torch.set_default_dtype(torch.float64)
    from models import gcl
    from n_body_system import model as nbody_model
    from qm9 import models as qm9_models
    from qm9 import utils as qm9_utils

    args.output.mkdir(parents=True, exist_ok=True)
    source = f"vgsatorras/egnn@{args.revision}"
    for name, (tensors, config) in {
        "egcl": layer_cases(gcl),
        "nbody": nbody_case(nbody_model),
        "qm9": qm9_cases(qm9_models, qm9_utils),
    }.items():
        path = args.output / f"{name}.safetensors"
        # one metadata entry: safetensors writes several in random order, and the file would change
        save_file(tensors, str(path), metadata={"golden": json.dumps({"source": source, "config": config})})
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
