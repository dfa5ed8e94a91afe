"""Make the FAENet golden fixtures and the element table with the reference package ``faenet==0.1.3`` (MIT).

Run it in its own environment, never in zoo's: ``faenet`` needs ``mendeleev`` and ``pandas`` to build its element
table, which zoo ships instead (``zoo/models/faenet_elements.py``). Nothing of ``faenet`` is copied into zoo.

* ``elements``: writes ``zoo/models/faenet_elements.py`` from ``faenet.embedding.PhysEmbedding`` (period, group
  and the 14 normalised physical properties, exactly the float32 values of its buffers).
* ``golden``: writes ``tests/fixtures/faenet/faenet.safetensors``. Every case builds ``faenet.FAENet`` with a
  tiny configuration, redraws every parameter and normalisation statistic from a seeded normal distribution in
  float64 (weights N(0, 1/fan_in), everything else N(0, 0.1^2), variances positive), and runs it in eval mode
  on two small periodic structures. Cases without frame averaging cover the message-passing types, skip
  connections, energy heads, force decoders and embeddings (not ``mp_type="updown_local_env"``, whose
  upstream ``propagate(..., local_env=True)`` call fails under torch_geometric 2.8), and use
  ``pbc_preprocess`` itself on a cell whose entries are exact in float32 (it casts the cell offsets to
  float32). Frame-averaging cases apply ``faenet.transforms.FrameAveraging`` to each structure (with float64
  as the default dtype, which its constants need to work in float64) and ``faenet.fa_forward.model_forward``,
  with a float64 copy of ``pbc_preprocess`` (the rotated cells are not exact in float32). The file holds the
  inputs, the ``state_dict`` and the outputs of each case (keys ``<case>.input.*``, ``<case>.state.*``,
  ``<case>.output.*``) and, as JSON in the safetensors metadata (``golden``), the upstream and zoo arguments of
  each case and the package versions. No pickle is involved.

Usage::

    python -m venv /tmp/faenetvenv
    /tmp/faenetvenv/bin/pip install faenet==0.1.3 --no-deps
    /tmp/faenetvenv/bin/pip install "mendeleev==0.14.0" "pandas<2.2" "sqlalchemy<2"
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/faenetvenv/lib/python3.11/site-packages/zz_main.pth
    /tmp/faenetvenv/bin/python scripts/golden/make_faenet_golden.py elements
    /tmp/faenetvenv/bin/python scripts/golden/make_faenet_golden.py golden
    ZOO_FAENET_PYTHON=/tmp/faenetvenv/bin/python pytest tests/models/test_faenet.py -m reference  # reproduces it
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import textwrap
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch_geometric.data import Batch, Data

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "faenet" / "faenet.safetensors"
ELEMENTS = ROOT / "zoo" / "models" / "faenet_elements.py"
CUTOFF = 4.0
CELL = [[6.5, 0.0, 0.0], [0.75, 7.25, 0.0], [0.25, 0.5, 16.0]]  # exact in float32
SPECIES = [(1, 6, 8, 29, 29, 29, 47), (7, 1, 78, 78, 26, 13)]
TAGS = [(2, 2, 2, 1, 1, 0, 0), (2, 2, 1, 1, 0, 0)]
TINY = {
    "cutoff": CUTOFF,
    "hidden_channels": 24,
    "num_filters": 12,
    "num_gaussians": 6,
    "num_interactions": 2,
    "tag_hidden_channels": 2,
    "pg_hidden_channels": 2,
    "phys_hidden_channels": 0,
    "phys_embeds": True,
    "second_layer_MLP": False,
    "complex_mp": False,
    "graph_norm": True,
    "mp_type": "updownscale_base",
    "skip_co": "concat",
    "energy_head": None,
    "regress_forces": "",
    "force_decoder_type": "mlp",
    "force_decoder_model_config": {"mlp": {"hidden_channels": 8, "norm": "batch1d"}},
}
# case -> (changes to TINY, frame averaging (upstream "2D"/"3D", fa_method) or None, graphs used)
CASES: dict[str, tuple[dict, tuple[str, str] | None, tuple[int, ...]]] = {
    "base": ({"mp_type": "base", "complex_mp": True}, None, (0, 1)),
    "simple": ({"mp_type": "simple", "skip_co": "add", "second_layer_MLP": True}, None, (0, 1)),
    "updownscale": ({"mp_type": "updownscale", "energy_head": "weighted-av-initial-embeds"}, None, (0, 1)),
    "updownscale_base": (
        {"energy_head": "weighted-av-final-embeds", "phys_hidden_channels": 6, "regress_forces": "direct"},
        None,
        (0, 1),
    ),
    "concat_atom": (
        {
            "mp_type": "updownscale",
            "skip_co": "concat_atom",
            "regress_forces": "direct",
            "force_decoder_type": "res",
            "force_decoder_model_config": {"res": {"hidden_channels": 8, "norm": "layer"}},
        },
        None,
        (0, 1),
    ),
    "no_norm": (
        {
            "graph_norm": False,
            "skip_co": False,
            "phys_embeds": False,
            "pg_hidden_channels": 0,
            "tag_hidden_channels": 0,
            "regress_forces": "direct",
            "force_decoder_type": "simple",
            "force_decoder_model_config": {"simple": {"hidden_channels": 8, "norm": None}},
        },
        None,
        (0, 1),
    ),
    "res_updown": (
        {
            "regress_forces": "direct_with_gradient_target",
            "force_decoder_type": "res_updown",
            "force_decoder_model_config": {"res_updown": {"hidden_channels": 8, "norm": "batch1d"}},
        },
        None,
        (0, 1),
    ),
    "fa_3d_all": ({"regress_forces": "direct", "energy_head": "weighted-av-final-embeds"}, ("3D", "all"), (0,)),
    "fa_3d_se3_all": ({"regress_forces": "direct", "mp_type": "base"}, ("3D", "se3-all"), (1,)),
    "fa_2d_all": ({"regress_forces": "direct"}, ("2D", "all"), (0,)),
    "fa_2d_se3_all": ({"regress_forces": "direct", "complex_mp": True}, ("2D", "se3-all"), (1,)),
    "fa_3d_det": ({"regress_forces": "direct"}, ("3D", "det"), (0,)),
    "fa_3d_all_batch": ({"regress_forces": "direct", "graph_norm": False}, ("3D", "all"), (0, 1)),
    "fa_2d_all_batch": ({"regress_forces": "direct", "graph_norm": False}, ("2D", "all"), (0, 1)),
}
ZOO_GROUPS = {("3D", "all"): "E3", ("3D", "se3-all"): "SE3", ("2D", "all"): "E2", ("2D", "se3-all"): "SE2"}


# ----------------------------------------------------------------------------------------------- elements
def write_elements() -> None:
    """Write the period, group and property table of ``PhysEmbedding`` as a Python module."""
    from faenet.embedding import PhysEmbedding

    table = PhysEmbedding(props=True, props_grad=False, pg=True)
    properties = table.properties  # [86, P] float32, row 0 = padding zeros

    def wrapped(values: list, indent: int) -> list[str]:
        """``values`` as comma-separated lines of at most 112 characters, indented by ``indent`` spaces."""
        text = textwrap.wrap(", ".join(json.dumps(value) for value in values) + ",", 112 - indent)
        return [" " * indent + line for line in text]

    lines = [
        '"""Element table of FAENet\'s embedding block (Duval et al., 2023), shipped so zoo needs no mendeleev.',
        "",
        "Generated by ``scripts/golden/make_faenet_golden.py elements`` from ``faenet==0.1.3``",
        f"(``faenet.embedding.PhysEmbedding``, mendeleev {version('mendeleev')}): do not edit by hand.",
        "",
        "* ``PERIOD[z]``, ``GROUP[z]`` for :math:`z = 0..100` (index 0 is padding, 1); f-block elements without a",
        "  group have group 19. ``PERIOD_SIZE``, ``GROUP_SIZE``: the sizes of FAENet's period and group embeddings",
        "  (7 and 19; so group 19 and period 7 are out of range of those embeddings, as upstream).",
        "* ``PROPERTIES[z]`` for :math:`z = 0..85`: the properties ``PROPERTY_NAMES`` (Å, Å³, g/cm³, bohr³, eV;",
        "  ``IE1``, ``IE2`` the first two ionisation energies), each standardised over :math:`z = 1..85` (mean 0,",
        "  standard deviation 1) with missing values set to the column mean, as float32 values written exactly;",
        "  row 0 is zeros.",
        '"""',
        "",
        '__all__ = ["GROUP", "GROUP_SIZE", "PERIOD", "PERIOD_SIZE", "PROPERTIES", "PROPERTY_NAMES"]',
        "",
        f"PERIOD_SIZE = {table.period_size}",
        f"GROUP_SIZE = {table.group_size}",
        "# fmt: off",
        "PROPERTY_NAMES = (",
        *wrapped(list(table.properties_list), 4),
        ")",
        "PERIOD = (",
        *wrapped(table.period.tolist(), 4),
        ")",
        "GROUP = (",
        *wrapped(table.group.tolist(), 4),
        ")",
        "PROPERTIES = (",
        *[
            line
            for z, row in enumerate(properties)
            for line in [f"    # z = {z}", "    (", *wrapped(row.tolist(), 8), "    ),"]
        ],
        ")",
        "# fmt: on",
        "",
    ]
    ELEMENTS.write_text("\n".join(lines))
    print(f"wrote {ELEMENTS}")


# ------------------------------------------------------------------------------------------------- golden
def structure(index: int, generator: torch.Generator) -> Data:
    """A random periodic structure of SPECIES[index] in CELL with all edges within CUTOFF (brute force)."""
    cell = torch.tensor(CELL, dtype=torch.float64)
    num = len(SPECIES[index])
    while True:
        frac = torch.rand(num, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.3])
        pos = frac @ cell
        shifts = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.float64)
        vec = pos[None, :, None, :] - pos[:, None, None, :] + (shifts @ cell)[None, None]  # [i, j, s, 3]
        dist = vec.norm(dim=-1)
        if dist[dist > 0].min() > 0.9:
            break
    target, source, shift = torch.nonzero((dist < CUTOFF) & (dist > 0), as_tuple=True)
    return Data(
        pos=pos,
        atomic_numbers=torch.tensor(SPECIES[index]),
        tags=torch.tensor(TAGS[index]),
        cell=cell[None],
        edge_index=torch.stack([source, target]),
        cell_offsets=shifts[shift].long(),
        neighbors=torch.tensor([len(source)]),
        natoms=torch.tensor([num]),
    )


def pbc_preprocess_float64(data, cutoff=6.0, max_num_neighbors=40):
    """``faenet.utils.pbc_preprocess`` without its cast of the cell offsets to float32."""
    source, target = data.edge_index
    cell = torch.repeat_interleave(data.cell, data.neighbors, dim=0)  # [E, 3, 3]
    rel_pos = data.pos[source] - data.pos[target] + torch.einsum("ek,ekc->ec", data.cell_offsets.double(), cell)
    return data.atomic_numbers.long(), data.batch, data.edge_index, rel_pos, rel_pos.norm(dim=-1)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Redraw parameters and normalisation statistics; keep the element table and the Gaussian centres."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("phys_emb.group", "phys_emb.period", "distance_expansion.offset", "num_batches_tracked")):
                continue
            if name.endswith("phys_emb.properties"):
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if tensor.dim() == 2:
                tensor.copy_(noise / math.sqrt(tensor.shape[1]))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            else:
                tensor.copy_(0.1 * noise + (1.0 if name.endswith(("norm.weight", ".1.weight")) else 0.0))


def zoo_arguments(config: dict, fa: tuple[str, str] | None) -> dict:
    """The zoo ``FAENet`` arguments of an upstream configuration."""
    out = {key: value for key, value in config.items() if key != "preprocess"}
    if fa is None:
        out["frames"] = None
    else:
        method = fa[1].removeprefix("se3-")
        group = ZOO_GROUPS[(fa[0], "se3-all" if fa[1].startswith("se3") else "all")]
        out.update(frames=method, group=group)
    return out


def make_golden(output: Path = FIXTURE) -> None:
    from faenet import FAENet
    from faenet.fa_forward import model_forward
    from faenet.transforms import FrameAveraging

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(7)
    graphs = [structure(0, generator), structure(1, generator)]
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"faenet": version("faenet"), "torch_geometric": version("torch_geometric"), "cases": {}}
    for seed, (case, (changes, fa, used)) in enumerate(CASES.items()):
        config = {**TINY, **changes}
        preprocess = "pbc_preprocess" if fa is None else pbc_preprocess_float64
        model = FAENet(**config, preprocess=preprocess).double().eval()
        randomise(model, seed)
        data_list = []
        for index in used:
            graph = graphs[index].clone()
            if fa is not None:  # its constants (torch.eye, torch.tensor(1.0)) take the default dtype
                torch.set_default_dtype(torch.float64)
                graph = FrameAveraging(*fa)(graph)
                torch.set_default_dtype(torch.float32)
            data_list.append(graph)
        batch = Batch.from_data_list(data_list)
        with torch.no_grad():
            if fa is None:
                preds = model(batch.clone(), mode="inference")
                preds["energy"] = preds["energy"].view(-1)
            else:
                preds = model_forward(batch, model, fa[0], mode="inference", crystal_task=True)
        inputs = {
            "pos": batch.pos,
            "z": batch.atomic_numbers,
            "tags": batch.tags,
            "batch": batch.batch,
            "cell": batch.cell,
            "edge_index": batch.edge_index,
            "edge_shift": batch.cell_offsets,
            "natoms": batch.natoms,
        }
        outputs = {"energy": preds["energy"]} | ({"forces": preds["forces"]} if preds.get("forces") is not None else {})
        for section, values in (("input", inputs), ("state", model.state_dict()), ("output", outputs)):
            for key, value in values.items():
                tensors[f"{case}.{section}.{key}"] = value.detach().clone().contiguous()
        meta["cases"][case] = {"upstream": config, "frame_averaging": fa, "zoo": zoo_arguments(config, fa)}
        print(f"{case}: energy {preds['energy'].tolist()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(output), metadata={"golden": json.dumps(meta)})
    print(f"wrote {output} ({output.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("elements", "golden"))
    parser.add_argument("--output", type=Path, default=FIXTURE, help="where golden writes (default: the fixture)")
    args = parser.parse_args()
    write_elements() if args.what == "elements" else make_golden(args.output)


if __name__ == "__main__":
    main()
