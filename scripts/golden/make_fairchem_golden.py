"""Golden tensors from fairchem-core 1.10.0 for the EquiformerV2 and eSCN parity tests (tests/fixtures/fairchem/).

Runs in its own environment, never in zoo's (fairchem pins old dependencies; zoo is not imported here)::

    python -m venv /tmp/fcvenv
    /tmp/fcvenv/bin/pip install torch==2.13.0 "torch-geometric==2.7.*" "e3nn==0.6.*" torch-scatter lmdb \
        orjson ase pyyaml numba
    /tmp/fcvenv/bin/pip install --no-deps fairchem-core==1.10.0
    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_golden.py            # every case
    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_golden.py escn_tiny_monolithic  # some cases

For each case (model x layout x size) it builds fairchem's model in float64 with random weights (every
parameter perturbed so no zero or unit initialisation hides a mis-mapped weight, then rounded to float32
values, which is what a real checkpoint holds), writes a checkpoint in fairchem's own format
(``torch.save({"state_dict", "config", "normalizers", "ema", ...})``, keys with a ``module.`` prefix and the
float32 weights) and, for two inputs (a periodic Cu(111) slab with an O adsorbate and a molecule), fairchem's
outputs as its calculator reports them: the model output denormalised (``out * std + mean``) with the linear
or element references added, from the plain ``state_dict`` weights and from the EMA weights.

Two things are fixed so that the comparison is about the models' arithmetic:

* the graph: fairchem's PBC neighbour search and ``get_pbc_distances`` compute cell offsets in float32, so
  the edges (the 20 nearest neighbours within the cutoff, from ASE, rattled so there are no ties) and their
  float64 vectors are given to the model through its ``generate_graph``; they are saved with the outputs;
* the random roll of each edge frame: fairchem draws ``torch.rand_like(vec)`` in every forward (EquiformerV2's
  ``init_edge_rot_mat``, eSCN's ``_init_edge_rot_mat``); the draw is recorded (same generator state) and saved
  as ``perpendicular = draw - 0.5``.

Outputs: ``<case>.pt`` (the fairchem checkpoint) and ``<case>.safetensors`` (inputs, edges, draws, outputs).
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.neighborlist import neighbor_list
from safetensors.torch import save_file
from torch_geometric.data import Batch, Data

logging.disable(logging.WARNING)

from fairchem.core.models.base import GraphData, HydraModel  # noqa: E402
from fairchem.core.models.equiformer_v2 import equiformer_v2 as eqv2_hydra  # noqa: E402
from fairchem.core.models.equiformer_v2 import equiformer_v2_deprecated as eqv2_mono  # noqa: E402
from fairchem.core.models.escn.escn import eSCN  # noqa: E402
from fairchem.core.modules.exponential_moving_average import ExponentialMovingAverage  # noqa: E402
from fairchem.core.modules.normalization.element_references import create_element_references  # noqa: E402
from fairchem.core.modules.normalization.normalizer import create_normalizer  # noqa: E402

SEED = 1234
MAX_NEIGHBORS = 20

EQV2_TINY = dict(
    num_layers=2,
    sphere_channels=16,
    attn_hidden_channels=16,
    num_heads=2,
    attn_alpha_channels=8,
    attn_value_channels=4,
    ffn_hidden_channels=16,
    norm_type="layer_norm_sh",
    lmax_list=[2],
    mmax_list=[1],
    grid_resolution=8,
    edge_channels=16,
    use_grid_mlp=True,
)
EQV2_MEDIUM = dict(EQV2_TINY, lmax_list=[4], mmax_list=[2], grid_resolution=None, norm_type="rms_norm_sh")
EQV2_COMMON = dict(
    use_pbc=True,
    regress_forces=True,
    otf_graph=True,
    max_neighbors=MAX_NEIGHBORS,
    max_radius=5.0,
    max_num_elements=90,
    alpha_drop=0.1,
    drop_path_rate=0.1,
    proj_drop=0.0,
    weight_init="uniform",
)
ESCN_TINY = dict(
    num_layers=2,
    sphere_channels=8,
    hidden_channels=16,
    edge_channels=8,
    lmax_list=[2],
    mmax_list=[1],
    num_sphere_samples=16,
)
ESCN_MEDIUM = dict(
    ESCN_TINY,
    num_layers=3,
    sphere_channels=16,
    hidden_channels=32,
    edge_channels=16,
    lmax_list=[4],
    mmax_list=[2],
    num_sphere_samples=32,
)
ESCN_COMMON = dict(
    use_pbc=True,
    regress_forces=True,
    otf_graph=True,
    max_neighbors=MAX_NEIGHBORS,
    cutoff=5.0,
    max_num_elements=90,
    distance_function="gaussian",
    basis_width_scalar=2.0,
)
OLD_NORMALIZERS = {
    "target": {"mean": torch.tensor(-0.7554450631141663), "std": torch.tensor(2.887317180633545)},
    "grad_target": {"mean": torch.tensor(0.0), "std": torch.tensor(2.887317180633545)},
}
NEW_NORMALIZERS = {
    "energy": {"mean": torch.tensor(0.25), "rmsd": torch.tensor(1.75)},
    "forces": {"mean": torch.tensor(0.0), "rmsd": torch.tensor(1.25)},
}


# ------------------------------------------------------------------------------------------------- inputs
def structures() -> dict[str, Atoms]:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    slab.rattle(0.05, seed=1)
    slab.pbc = (True, True, False)
    rng = np.random.default_rng(2)
    molecule = Atoms(numbers=[6, 6, 8, 7, 1, 1, 1, 1], positions=rng.uniform(0.0, 3.2, size=(8, 3)))
    while min(molecule.get_distance(i, j) for i in range(8) for j in range(i)) < 0.9:
        molecule.positions = rng.uniform(0.0, 3.2, size=(8, 3))
    return {"slab": slab, "molecule": molecule}


def edges(atoms: Atoms, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges source j -> target i within the cutoff, the 20 nearest per target, sorted by target then distance.

    Returns ``edge_index [2, E]``, integer cell offsets ``[E, 3]`` and float64 vectors
    ``pos[j] - pos[i] + offset @ cell``.
    """
    target, source, shift, vector, distance = neighbor_list("ijSDd", atoms, cutoff)
    keep = []
    for i in range(len(atoms)):
        mine = np.nonzero(target == i)[0]
        order = np.argsort(distance[mine], kind="stable")
        ranked = distance[mine][order]
        if len(ranked) > MAX_NEIGHBORS:
            assert ranked[MAX_NEIGHBORS] - ranked[MAX_NEIGHBORS - 1] > 1e-6, "tie at the max-neighbour boundary"
        keep.extend(mine[order[:MAX_NEIGHBORS]])
    keep = np.array(keep)
    edge_index = torch.tensor(np.stack([source[keep], target[keep]]), dtype=torch.long)
    return edge_index, torch.tensor(shift[keep], dtype=torch.long), torch.tensor(vector[keep], dtype=torch.float64)


def batch_of(atoms: Atoms) -> Batch:
    data = Data(
        pos=torch.tensor(atoms.positions, dtype=torch.float64),
        atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
        cell=torch.tensor(np.array(atoms.cell), dtype=torch.float64)[None],
        natoms=torch.tensor([len(atoms)]),
        pbc=torch.tensor(atoms.pbc)[None],
    )
    return Batch.from_data_list([data])


def fixed_graph(data: Batch, edge_index: torch.Tensor, shift: torch.Tensor, vector: torch.Tensor):
    """A ``generate_graph`` replacement that returns the given float64 edges."""

    def generate_graph(*args, **kwargs) -> GraphData:
        return GraphData(
            edge_index=edge_index,
            edge_distance=torch.linalg.norm(vector, dim=1),
            edge_distance_vec=vector.clone(),
            cell_offsets=shift,
            offset_distances=shift.to(torch.float64) @ data.cell[0],
            neighbors=torch.tensor([edge_index.shape[1]]),
            batch_full=data.batch,
            atomic_numbers_full=data.atomic_numbers.long(),
        )

    return generate_graph


# ---------------------------------------------------------------------------------------- recorded draws
class RecordDraws:
    """Wraps a function of the edge vectors that calls ``torch.rand_like(vec)`` first; records the draw."""

    def __init__(self, function):
        self.function, self.draws = function, []

    def __call__(self, *args):
        vec = args[-1]
        state = torch.get_rng_state()
        self.draws.append(torch.rand_like(vec) - 0.5)
        torch.set_rng_state(state)
        return self.function(*args)


# ---------------------------------------------------------------------------------------------- weights
def structure_inputs(
    structure: str, data: Batch, edge_index: torch.Tensor, shift: torch.Tensor, draw: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The inputs of one fixture structure: positions, numbers, cell, pbc, fairchem's edges and frame draws."""
    return {
        f"{structure}.pos": data.pos,
        f"{structure}.z": data.atomic_numbers,
        f"{structure}.cell": data.cell,
        f"{structure}.pbc": data.pbc,
        f"{structure}.edge_index": edge_index,
        f"{structure}.edge_shift": shift,
        f"{structure}.perpendicular": draw,
    }


def save_golden(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a fixture (contiguous tensors) with the reference version and seed in its metadata."""
    metadata = {"fairchem_core": "1.10.0", "seed": str(SEED)} if metadata is None else metadata
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def randomise(model: torch.nn.Module, scale: float = 0.05) -> None:
    """Perturb every trainable parameter (so none stays exactly 0 or 1), then round to float32 values.

    The Gaussian centres (``distance_expansion.offset``) are rounded too: they are the one buffer zoo keeps
    from the checkpoint rather than rebuilding. Frozen parameters and the other buffers are derived constants
    that zoo rebuilds, so they keep their float64 values here.
    """
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for param in model.parameters():
            if not param.requires_grad:
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(scale * noise * (param.abs().mean() + 0.1))
            param.copy_(param.float().double())
        for name, buffer in model.named_buffers():
            if name.endswith("distance_expansion.offset"):
                buffer.copy_(buffer.float().double())


def ema_state(model: torch.nn.Module) -> dict:
    """An EMA whose shadow differs from the weights, in fairchem's layout (trainable parameters only)."""
    generator = torch.Generator().manual_seed(SEED + 1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = ExponentialMovingAverage(trainable, decay=0.999)
    with torch.no_grad():
        for shadow in ema.shadow_params:
            shadow.add_(
                0.02 * torch.randn(shadow.shape, generator=generator, dtype=shadow.dtype) * (shadow.abs().mean() + 0.1)
            )
            shadow.copy_(shadow.float().double())
    ema.num_updates = 1000
    state = ema.state_dict()
    state["shadow_params"] = [s.float() for s in state["shadow_params"]]
    return state


def float32_state(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------- running
def run(model, recorder: RecordDraws, data: Batch, edge_index, shift, vector) -> tuple[dict, torch.Tensor]:
    model.generate_graph = fixed_graph(data, edge_index, shift, vector)
    if hasattr(model, "backbone"):
        model.backbone.generate_graph = model.generate_graph
    recorder.draws.clear()
    torch.manual_seed(SEED)
    out = model(data)
    out = {key: value[key] if isinstance(value, dict) else value for key, value in out.items()}  # hydra: per head
    (draw,) = recorder.draws
    return {"energy": out["energy"].detach().reshape(-1), "forces": out["forces"].detach().reshape(-1, 3)}, draw


def denormalise(out: dict, normalizers: dict, data: Batch, lin_ref: torch.Tensor | None, elementrefs) -> dict:
    """What fairchem's calculator reports: ``out * std + mean``, plus element references."""
    energy_key = "target" if "target" in normalizers else "energy"
    forces_key = "grad_target" if "grad_target" in normalizers else "forces"
    energy = create_normalizer(state_dict=copy.deepcopy(normalizers[energy_key])).double().denorm(out["energy"])
    forces = create_normalizer(state_dict=copy.deepcopy(normalizers[forces_key])).double().denorm(out["forces"])
    if elementrefs is not None:
        energy = elementrefs.double()(energy.view(-1, 1), data).view(-1)
    return {"energy": energy, "forces": forces}


def element_references() -> torch.nn.Module:
    references = torch.zeros(91, dtype=torch.float64)
    references[1:] = torch.linspace(-3.0, -1.0, 90, dtype=torch.float64).float().double()
    return create_element_references(state_dict={"element_references": references})


def build(kind: str, layout: str, config: dict) -> tuple[torch.nn.Module, dict, dict, str, torch.nn.Module | None]:
    """``(model, checkpoint config, normalizers, state-dict key prefix, element references)`` of one case.

    Layouts: ``monolithic`` (legacy ``{"model": name, "model_attributes": {...}}`` config, old-style
    normalisers), ``monolithic-named`` (``{"model": {"name": name, ...}}``, new-style normalisers) and
    ``hydra`` (backbone + heads, new-style normalisers and element references).
    """
    if layout.startswith("monolithic"):
        attributes = {**(EQV2_COMMON if kind == "equiformer_v2" else ESCN_COMMON), **config}
        model = eqv2_mono.EquiformerV2(**attributes) if kind == "equiformer_v2" else eSCN(**attributes)
        if layout == "monolithic":
            ckpt_config = {"model": kind, "model_attributes": attributes, "trainer": "forces"}
            return model, ckpt_config, OLD_NORMALIZERS, "module.module.", None
        ckpt_config = {"model": {"name": kind, **attributes}, "trainer": "ocp"}
        return model, ckpt_config, NEW_NORMALIZERS, "module.module.", None
    if kind == "equiformer_v2":
        backbone = {"model": "equiformer_v2_backbone", **EQV2_COMMON, **config}
        heads = {"energy": {"module": "equiformer_v2_energy_head"}, "forces": {"module": "equiformer_v2_force_head"}}
    else:
        backbone = {"model": "escn_backbone", **ESCN_COMMON, **config}
        heads = {"energy": {"module": "escn_energy_head"}, "forces": {"module": "escn_force_head"}}
    ckpt_config = {"model": {"name": "hydra", "backbone": backbone, "heads": heads}, "trainer": "ocp"}
    return HydraModel(backbone=backbone, heads=heads), ckpt_config, NEW_NORMALIZERS, "module.", element_references()


def install_recorder(kind: str, model: torch.nn.Module) -> RecordDraws:
    """Record the frame draws of ``model``: EquiformerV2 draws in a module function, eSCN in a method."""
    if kind == "escn":
        target = model.backbone if hasattr(model, "backbone") else model
        recorder = RecordDraws(target._init_edge_rot_mat)
        target._init_edge_rot_mat = recorder
        return recorder
    module = eqv2_hydra if hasattr(model, "backbone") else eqv2_mono
    recorder = RecordDraws(module.init_edge_rot_mat)
    module.init_edge_rot_mat = recorder
    return recorder


def make_case(name: str, kind: str, layout: str, config: dict, out_dir: Path) -> None:
    torch.manual_seed(SEED)
    model, ckpt_config, normalizers, prefix, elementrefs = build(kind, layout, config)
    model = model.double().eval()
    randomise(model)
    checkpoint = {
        "epoch": 3,
        "step": 1000,
        "state_dict": float32_state(model, prefix),
        "normalizers": normalizers,
        "config": ckpt_config,
        "ema": ema_state(model),
        "amp": None,
    }
    if elementrefs is not None:
        checkpoint["elementrefs"] = {"energy": {k: v.float() for k, v in elementrefs.state_dict().items()}}
    torch.save(checkpoint, out_dir / f"{name}.pt")

    tensors: dict[str, torch.Tensor] = {}
    ema_model = copy.deepcopy(model)
    ema = ExponentialMovingAverage([p for p in ema_model.parameters() if p.requires_grad], decay=0.999)
    ema.load_state_dict(
        {**checkpoint["ema"], "shadow_params": [s.double() for s in checkpoint["ema"]["shadow_params"]]}
    )
    ema.copy_to()
    recorder = install_recorder(kind, model)
    ema_recorder = recorder if kind == "equiformer_v2" else install_recorder(kind, ema_model)
    cutoff = EQV2_COMMON["max_radius"] if kind == "equiformer_v2" else ESCN_COMMON["cutoff"]
    for structure, atoms in structures().items():
        data = batch_of(atoms)
        edge_index, shift, vector = edges(atoms, cutoff)
        raw, draw = run(model, recorder, data, edge_index, shift, vector)
        raw_ema, draw_ema = run(ema_model, ema_recorder, data, edge_index, shift, vector)
        assert torch.equal(draw, draw_ema)
        plain = denormalise(raw, normalizers, data, None, elementrefs)
        with_ema = denormalise(raw_ema, normalizers, data, None, elementrefs)
        tensors.update(
            {
                **structure_inputs(structure, data, edge_index, shift, draw),
                f"{structure}.energy": plain["energy"],
                f"{structure}.forces": plain["forces"],
                f"{structure}.energy_ema": with_ema["energy"],
                f"{structure}.forces_ema": with_ema["forces"],
            }
        )
        print(f"{name:32s} {structure:9s} E={plain['energy'].item():+.6f} |F|max={plain['forces'].abs().max():.4g}")
    save_golden(tensors, out_dir / f"{name}.safetensors")


CASES = {
    "eqv2_tiny_monolithic": ("equiformer_v2", "monolithic", EQV2_TINY),
    "eqv2_medium_monolithic": ("equiformer_v2", "monolithic", EQV2_MEDIUM),
    "eqv2_tiny_hydra": ("equiformer_v2", "hydra", EQV2_TINY),
    "escn_tiny_monolithic": ("escn", "monolithic", ESCN_TINY),
    "escn_medium_monolithic": ("escn", "monolithic-named", ESCN_MEDIUM),
    "escn_tiny_hydra": ("escn", "hydra", {**ESCN_TINY, "resolution": 8}),
}


def run_cases(description: str, cases: dict[str, Callable[[Path], None]]) -> None:
    """The command line of the fairchem golden scripts: ``[--out DIR] [CASE ...]``, each case written to DIR
    (default tests/fixtures/fairchem) in float64 (fairchem builds Wigner matrices and grids in the default
    dtype)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/fairchem")
    parser.add_argument("cases", nargs="*", default=list(cases), help=f"subset of {list(cases)}")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.cases:
        cases[name](args.out)


def main() -> None:
    run_cases(__doc__.splitlines()[0], {name: partial(make_case, name, *spec) for name, spec in CASES.items()})


if __name__ == "__main__":
    main()
