"""Golden tensors from the official Equiformer (v1) code for the parity tests (tests/fixtures/equiformer_v1/).

Runs in its own environment with the official code, never in zoo's (zoo is not imported here)::

    python -m venv /tmp/eqv1venv
    /tmp/eqv1venv/bin/pip install torch==2.13.0 e3nn==0.4.4 torch_geometric safetensors pyyaml
    git clone https://github.com/atomicarchitects/equiformer /tmp/equiformer   # commit 64cb786 (MIT)
    /tmp/eqv1venv/bin/python scripts/golden/make_equiformer_v1_golden.py --official /tmp/equiformer

Two things the official environment had are replaced (see ``_STUBS``, written next to the output and put on
``sys.path``): ``torch_cluster.radius_graph`` (a brute-force search; the edges it returns are saved and given
to zoo) and ``torch_scatter.scatter`` (``index_add``), which have no wheels for torch 2.13, and the three
``ocpmodels`` 0.0.3 pieces the code imports: the registry decorator, ``get_pbc_distances`` (the same
arithmetic, but in the dtype of the positions: upstream casts the periodic offsets to float32, which would
make a float64 comparison meaningless) and GemNet's ``RadialBasis`` (spherical Bessel basis times the
polynomial envelope). e3nn 0.4.4 itself needs one patch for torch >= 2.6: its ``o3/_wigner.py`` loads its own
constants with ``torch.load``, which now defaults to ``weights_only=True``; wrap that call in
``torch.serialization.safe_globals([slice])``. The node embedding's ``one_hot(...).float()`` is cast to the
model's dtype (exact: the values are 0 and 1) so the model runs in float64.

For each case (a reduced-size copy of a published configuration: QM9, QM9 with linear messages + Bessel
basis + E(3) irreps, MD17 lmax 3, OC20 IS2RE 6-block and 18-block with the auxiliary head) the official model
is built, every parameter perturbed (so no zero or unit initialisation hides a mis-mapped weight) and rounded
to float32 values (what a checkpoint holds), and run in float64 in eval mode. Each ``<case>.safetensors``
holds the official state dict under ``state_dict.`` (float32, with e3nn 0.4.4's ``output_mask`` and
``_compiled_main_left_right._w3j_*`` entries as a real checkpoint has them), the inputs (``pos``, ``z``,
``batch``, edges, cell, tags) and the outputs (normalised, as the network returns them); the constructor
arguments are in the ``golden`` metadata (``config``, ``reference``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

SEED = 20230501
OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "equiformer_v1"

_STUBS = {
    "torch_cluster/__init__.py": '''
import torch


def radius_graph(x, r, batch=None, loop=False, max_num_neighbors=32, flow="source_to_target", num_workers=1):
    """All pairs closer than r within each graph: [source; target], sorted by target then source."""
    batch = torch.zeros(x.shape[0], dtype=torch.long) if batch is None else batch
    mask = (torch.cdist(x, x) < r) & (batch[:, None] == batch[None, :])
    if not loop:
        mask.fill_diagonal_(False)
    target, source = mask.nonzero(as_tuple=True)
    return torch.stack([source, target])
''',
    "torch_scatter/__init__.py": """
def scatter(src, index, dim=0, out=None, dim_size=None, reduce="sum"):
    assert dim == 0 and out is None and reduce == "sum"
    dim_size = int(index.max()) + 1 if dim_size is None else dim_size
    return src.new_zeros((dim_size, *src.shape[1:])).index_add_(0, index, src)
""",
    "ocpmodels/__init__.py": "",
    "ocpmodels/common/__init__.py": "",
    "ocpmodels/common/registry.py": """
class _Registry:
    def register_model(self, name):
        return lambda cls: cls


registry = _Registry()
""",
    "ocpmodels/common/utils.py": """
import torch


def conditional_grad(dec):
    return lambda fn: fn


def radius_graph_pbc(*args, **kwargs):
    raise NotImplementedError("the golden script gives the edges (otf_graph=False)")


def get_pbc_distances(pos, edge_index, cell, cell_offsets, neighbors, return_offsets=False, return_distance_vec=False):
    row, col = edge_index
    vectors = pos[row] - pos[col]
    cell = torch.repeat_interleave(cell, neighbors, dim=0)
    offsets = cell_offsets.to(pos.dtype).view(-1, 1, 3).bmm(cell.to(pos.dtype)).view(-1, 3)
    vectors = vectors + offsets
    distances = vectors.norm(dim=-1)
    keep = torch.arange(len(distances))[distances != 0]
    out = {"edge_index": edge_index[:, keep], "distances": distances[keep]}
    if return_distance_vec:
        out["distance_vec"] = vectors[keep]
    if return_offsets:
        out["offsets"] = offsets[keep]
    return out
""",
    "ocpmodels/models/__init__.py": "",
    "ocpmodels/models/gemnet/__init__.py": "",
    "ocpmodels/models/gemnet/layers/__init__.py": "",
    "ocpmodels/models/gemnet/layers/radial_basis.py": """
import math

import numpy as np
import torch


class PolynomialEnvelope(torch.nn.Module):
    def __init__(self, exponent):
        super().__init__()
        self.p = float(exponent)
        self.a = -(self.p + 1) * (self.p + 2) / 2
        self.b = self.p * (self.p + 2)
        self.c = -self.p * (self.p + 1) / 2

    def forward(self, d):
        value = 1 + self.a * d**self.p + self.b * d ** (self.p + 1) + self.c * d ** (self.p + 2)
        return torch.where(d < 1, value, torch.zeros_like(d))


class SphericalBesselBasis(torch.nn.Module):
    def __init__(self, num_radial, cutoff):
        super().__init__()
        self.norm_const = math.sqrt(2 / cutoff**3)
        self.frequencies = torch.nn.Parameter(torch.tensor(np.pi * np.arange(1, num_radial + 1, dtype=np.float32)))

    def forward(self, d):
        return self.norm_const / d[:, None] * torch.sin(self.frequencies * d[:, None])


class RadialBasis(torch.nn.Module):
    def __init__(self, num_radial, cutoff, rbf=None, envelope=None):
        super().__init__()
        assert rbf == {"name": "spherical_bessel"} and envelope is None
        self.inv_cutoff = 1 / cutoff
        self.envelope = PolynomialEnvelope(5)
        self.rbf = SphericalBesselBasis(num_radial, cutoff)

    def forward(self, d):
        d = d * self.inv_cutoff
        return self.envelope(d)[:, None] * self.rbf(d)
""",
}

_QM9_TINY = dict(
    irreps_node_embedding="16x0e+8x1e+4x2e",
    num_layers=2,
    irreps_sh="1x0e+1x1e+1x2e",
    max_radius=5.0,
    number_of_basis=16,
    fc_neurons=[8, 8],
    irreps_feature="24x0e",
    irreps_head="8x0e+4x1e+2x2e",
    num_heads=2,
    nonlinear_message=True,
    irreps_mlp_mid="24x0e+12x1e+6x2e",
)
CASES = {
    "qm9": ("qm9", dict(_QM9_TINY, basis_type="gaussian")),
    "qm9_e3_linear_bessel": (
        "qm9",
        dict(
            _QM9_TINY,
            irreps_node_embedding="8x0e+4x0o+4x1e+4x1o+2x2e+2x2o",
            irreps_sh="1x0e+1x1o+1x2e",
            irreps_head="4x0e+2x0o+2x1e+2x1o+2x2e+2x2o",
            irreps_mlp_mid="12x0e+4x0o+4x1e+4x1o+2x2e+2x2o",
            nonlinear_message=False,
            rescale_degree=True,
            basis_type="bessel",
            number_of_basis=8,
        ),
    ),
    "md17_l3": (
        "md17",
        dict(
            _QM9_TINY,
            irreps_node_embedding="16x0e+8x1e+8x2e+4x3e",
            irreps_sh="1x0e+1x1e+1x2e+1x3e",
            irreps_head="8x0e+4x1e+4x2e+2x3e",
            irreps_mlp_mid="24x0e+12x1e+12x2e+6x3e",
            basis_type="exp",
            number_of_basis=12,
        ),
    ),
    "is2re": (
        "oc20",
        dict(
            irreps_node_embedding="24x0e+12x1e",
            num_layers=2,
            irreps_sh="1x0e+1x1e",
            max_radius=5.0,
            number_of_basis=16,
            fc_neurons=[8, 8],
            irreps_feature="32x0e",
            irreps_head="8x0e+4x1e",
            num_heads=3,
            irreps_pre_attn="24x0e+12x1e",
            nonlinear_message=True,
            irreps_mlp_mid="48x0e+24x1e",
        ),
    ),
    "is2re_aux": (
        "oc20",
        dict(
            irreps_node_embedding="24x0e+12x1e",
            num_layers=3,
            irreps_sh="1x0e+1x1e",
            max_radius=5.0,
            number_of_basis=16,
            fc_neurons=[8, 8],
            irreps_feature="32x0e+16x1e",
            irreps_head="8x0e+4x1e",
            num_heads=3,
            irreps_pre_attn="24x0e+12x1e",
            nonlinear_message=True,
            irreps_mlp_mid="48x0e+24x1e",
            drop_path_rate=0.05,
            use_auxiliary_task=True,
        ),
    ),
}


def _spread_points(num: int, rng: np.random.Generator, box: float, min_distance: float) -> np.ndarray:
    points: list[np.ndarray] = []
    while len(points) < num:
        candidate = rng.uniform(0.0, box, size=3)
        if all(np.linalg.norm(candidate - p) >= min_distance for p in points):
            points.append(candidate)
    return np.array(points)


def molecules(rng: np.random.Generator, sizes: list[int], elements: list[int]) -> dict[str, torch.Tensor]:
    """Random molecule-like structures (atoms >= 0.95 A apart), batched."""
    pos = [_spread_points(n, rng, 1.3 * n ** (1 / 3) + 1.2, 0.95) for n in sizes]
    return {
        "pos": torch.tensor(np.concatenate(pos)),
        "z": torch.tensor(rng.choice(elements, size=sum(sizes))),
        "batch": torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
    }


def slab(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A rattled fcc(111) Cu slab, 2x2 in plane, 3 layers, with an O adsorbate; tags 0 (bottom), 1, 2 (O)."""
    a = 3.61 / math.sqrt(2)
    cell = np.array([[2 * a, 0, 0], [a, a * math.sqrt(3), 0], [0, 0, 25.0]])
    layer_shift = [np.zeros(3), np.array([a / 2, a / (2 * math.sqrt(3)), 0]), np.array([a, a / math.sqrt(3), 0])]
    pos, tags = [], []
    for layer in range(3):
        for i in range(2):
            for j in range(2):
                pos.append(
                    i * cell[0] / 2 + j * cell[1] / 2 + layer_shift[layer] + [0, 0, 5.0 + layer * 3.61 / math.sqrt(3)]
                )
                tags.append(0 if layer == 0 else 1)
    pos.append(pos[-1] + [a / 2, a / (2 * math.sqrt(3)), 1.5])
    tags.append(2)
    pos = np.array(pos) + rng.normal(scale=0.05, size=(len(pos), 3))
    return {"pos": pos, "z": np.array([29] * 12 + [8]), "tags": np.array(tags), "cell": cell}


def periodic_edges(pos: np.ndarray, cell: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """All (source j, target i, shift S) with |x_j - x_i + S C| < cutoff, periodic in x and y; no self pairs."""
    edges, shifts = [], []
    for i in range(len(pos)):
        for j in range(len(pos)):
            for s0 in range(-2, 3):
                for s1 in range(-2, 3):
                    shift = np.array([s0, s1, 0])
                    if i == j and not shift.any():
                        continue
                    if np.linalg.norm(pos[j] - pos[i] + shift @ cell) < cutoff:
                        edges.append((j, i))
                        shifts.append(shift)
    return np.array(edges).T, np.array(shifts)


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter gets noise of about a tenth of its own scale, then float32 rounding."""
    with torch.no_grad():
        for param in model.parameters():
            scale = 0.1 * max(param.abs().mean().item(), 0.1)
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)
            param.copy_(param.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of atomicarchitects/equiformer")
    parser.add_argument("--stubs", type=Path, default=Path("/tmp/eqv1_stubs"))
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, text in _STUBS.items():
        path = args.stubs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    sys.path[:0] = [str(args.official), str(args.stubs)]

    import e3nn
    from nets import graph_attention_transformer as gat
    from nets.graph_attention_transformer_md17 import GraphAttentionTransformerMD17
    from nets.graph_attention_transformer_oc20 import GraphAttentionTransformerOC20
    from safetensors.torch import save_file
    from torch_geometric.data import Data

    def embed(self, node_atom):  # the official forward with the one-hot in the weights' dtype
        onehot = torch.nn.functional.one_hot(node_atom, self.max_atom_type).to(self.atom_type_lin.tp.weight.dtype)
        return self.atom_type_lin(onehot), onehot, onehot

    gat.NodeEmbeddingNetwork.forward = embed
    OUT.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        kind, config = CASES[case]
        rng = np.random.default_rng(SEED)
        generator = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        tensors: dict[str, torch.Tensor] = {}
        if kind == "qm9":
            model = gat.GraphAttentionTransformer(irreps_in="5x0e", alpha_drop=0.2, **config)
        elif kind == "md17":
            model = GraphAttentionTransformerMD17(irreps_in="64x0e", alpha_drop=0.0, **config)
        else:
            model = GraphAttentionTransformerOC20(
                None,
                None,
                1,
                use_node_attr=False,
                alpha_drop=0.2,
                otf_graph=False,
                use_pbc=True,
                max_neighbors=500,
                **config,
            )
        perturb(model, generator)
        tensors.update({f"state_dict.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()})
        model = model.double().eval()
        if kind in ("qm9", "md17"):
            inputs = molecules(rng, [7, 9] if kind == "qm9" else [9], [1, 6, 7, 8, 9] if kind == "qm9" else [1, 6, 8])
            pos = inputs["pos"].clone()
            tensors.update(pos=pos.clone(), z=inputs["z"], batch=inputs["batch"])
            from torch_cluster import radius_graph

            tensors["edge_index"] = radius_graph(pos, r=config["max_radius"], batch=inputs["batch"])
            if kind == "qm9":
                out = model(f_in=None, pos=pos, batch=inputs["batch"], node_atom=inputs["z"])
                tensors["y"] = out.detach()[:, 0]
            else:
                energy, forces = model(node_atom=inputs["z"], pos=pos, batch=inputs["batch"])
                tensors.update(energy=energy.detach()[:, 0], forces=forces.detach())
        else:
            structures = [slab(rng), slab(rng)]
            pos, z, tags, cells, edges, shifts, batch, neighbors, offset = [], [], [], [], [], [], [], [], 0
            for index, structure in enumerate(structures):
                edge_index, shift = periodic_edges(structure["pos"], structure["cell"], config["max_radius"])
                pos.append(structure["pos"])
                z.append(structure["z"])
                tags.append(structure["tags"])
                cells.append(structure["cell"])
                edges.append(edge_index + offset)
                shifts.append(shift)
                batch += [index] * len(structure["pos"])
                neighbors.append(edge_index.shape[1])
                offset += len(structure["pos"])
            data = Data(
                pos=torch.tensor(np.concatenate(pos)),
                atomic_numbers=torch.tensor(np.concatenate(z)),
                tags=torch.tensor(np.concatenate(tags)),
                cell=torch.tensor(np.stack(cells)),
                edge_index=torch.tensor(np.concatenate(edges, axis=1)),
                cell_offsets=torch.tensor(np.concatenate(shifts)),
                neighbors=torch.tensor(neighbors),
                batch=torch.tensor(batch),
            )
            tensors.update(
                pos=data.pos,
                z=data.atomic_numbers,
                tags=data.tags,
                cell=data.cell,
                batch=data.batch,
                edge_index=data.edge_index,
                edge_shift=data.cell_offsets,
            )
            out = model(data)
            if config.get("use_auxiliary_task"):
                tensors.update(relaxed_energy=out[0].detach()[:, 0], relaxed_displacement=out[1].detach())
            else:
                tensors["relaxed_energy"] = out.detach()[:, 0]
        metadata = {
            "config": {"kind": kind, **config},
            "reference": {
                "code": "atomicarchitects/equiformer@64cb786",
                "e3nn": e3nn.__version__,
                "torch": torch.__version__,
                "seed": SEED,
            },
        }
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(OUT / f"{case}.safetensors"),
            metadata={"golden": json.dumps(metadata)},
        )
        size = (OUT / f"{case}.safetensors").stat().st_size
        print(f"{case}: {sum(p.numel() for p in model.parameters())} parameters, {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
