"""Golden tensors from fairchem-core 1.10.0 for the OMat24-style EquiformerV2 (stress head) and the non-strict
max-neighbour selection of the OC22/OMat24 configurations (tests/fixtures/fairchem/).

Runs in the fairchem environment described in make_fairchem_golden.py (whose helpers it reuses)::

    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_omat_golden.py            # every case
    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_omat_golden.py eqv2_tiny_omat

Model cases: a tiny backbone + heads ("hydra") EquiformerV2 with the energy, force and ``rank2_symmetric_head``
stress heads configured as in fairchem's ``configs/omat24/all/eqV2_31M.yml`` (``decompose: True``,
``use_source_target_embedding: True``; normalisers for forces and the two stress parts, element references
for the energy, no energy normaliser), and a variant exercising the head's other switches. Weights are
random, rounded to float32, the edges and frame draws fixed as in make_fairchem_golden.py. The outputs are
what fairchem's trainer predicts (``OCPTrainer._forward`` recombines the denormalised isotropic and
anisotropic stress with ``cg_change_mat``; ``_denorm_preds`` denormalises the forces and adds the element
references to the energy; see :func:`predict`), for two periodic bulk structures.

Neighbour case ``neighbors_oc22``: the edges ``radius_graph_pbc`` keeps with ``max_neighbors=20`` and
``enforce_max_neighbors_strictly=False`` for structures with ties at the 20th neighbour (perfect fcc Cu,
perfect rocksalt NaCl, a perfect Pt(111) slab) and one whose 21st neighbour is within the 0.01 Å² tolerance
but not tied.

Outputs: ``<case>.pt`` (fairchem checkpoint, model cases) and ``<case>.safetensors``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from fairchem.core.common.utils import cg_change_mat, irreps_sum, radius_graph_pbc
from fairchem.core.models.base import HydraModel
from fairchem.core.modules.normalization.element_references import create_element_references
from fairchem.core.modules.normalization.normalizer import create_normalizer
from make_fairchem_golden import (
    EQV2_COMMON,
    EQV2_TINY,
    SEED,
    batch_of,
    edges,
    ema_state,
    fixed_graph,
    float32_state,
    install_recorder,
    randomise,
    run_cases,
    save_golden,
    structure_inputs,
)

OMAT_BACKBONE = dict(
    EQV2_COMMON,
    **EQV2_TINY,
    model="equiformer_v2_backbone",
    use_pbc_single=True,
    enforce_max_neighbors_strictly=False,
    max_num_elements=96,
    avg_num_nodes=31.17,
    avg_degree=61.95,
)
OMAT_STRESS = {
    "module": "rank2_symmetric_head",
    "output_name": "stress",
    "use_source_target_embedding": True,
    "decompose": True,
}
VARIANT_STRESS = {
    **OMAT_STRESS,
    "use_source_target_embedding": False,
    "edge_level_mlp": True,
    "num_mlp_layers": 3,
    "extensive": True,
    "avg_num_nodes": 7.5,
}
OMAT_NORMALIZERS = {
    "forces": {"mean": torch.tensor(0.0), "rmsd": torch.tensor(1.25)},
    "stress_isotropic": {"mean": torch.tensor(-0.0125), "rmsd": torch.tensor(0.0625)},
    "stress_anisotropic": {"mean": torch.tensor(0.00390625), "rmsd": torch.tensor(0.03125)},
}
OUTPUT_TARGETS = {
    "energy": {"level": "system", "property": "energy"},
    "forces": {"level": "atom", "property": "forces"},
    "stress": {
        "level": "system",
        "property": "stress",
        "decomposition": {"stress_isotropic": {"irrep_dim": 0}, "stress_anisotropic": {"irrep_dim": 2}},
    },
    "stress_isotropic": {"level": "system", "irrep_dim": 0, "parent": "stress"},
    "stress_anisotropic": {"level": "system", "irrep_dim": 2, "parent": "stress"},
}
CUTOFF = EQV2_COMMON["max_radius"]


def bulk_structures() -> dict[str, Atoms]:
    copper = bulk("Cu", "fcc", a=3.62, cubic=True)
    copper.rattle(0.05, seed=3)
    salt = bulk("NaCl", "rocksalt", a=5.64) * (1, 1, 2)
    salt.set_cell(salt.cell.array + np.array([[0.0, 0.1, 0.2], [0.15, 0.0, -0.1], [0.05, 0.3, 0.0]]), True)
    salt.numbers[1] = 17 if salt.numbers[1] == 11 else 11  # an antisite, so the cell has three kinds of site
    salt.rattle(0.05, seed=4)
    return {"copper": copper, "salt": salt}


def element_references() -> torch.nn.Module:
    references = torch.zeros(97, dtype=torch.float64)
    references[1:] = torch.linspace(-4.0, -0.5, 96, dtype=torch.float64).float().double()
    return create_element_references(state_dict={"element_references": references})


def predict(model, recorder, data, edge_index, shift, vector, elementrefs) -> tuple[dict, torch.Tensor]:
    """What fairchem's trainer predicts (``OCPTrainer._forward`` then ``_denorm_preds`` for each output).

    The trainer module itself needs wandb and numba, so its recombination of a decomposed target is repeated
    here line for line: the denormalised parts fill their slots of a ``[B, irreps_sum(2)]`` tensor, which is
    mapped to Cartesian by ``einsum("ba, cb->ca", cg_change_mat(2), irreps)``.
    """
    model.generate_graph = fixed_graph(data, edge_index, shift, vector)
    model.backbone.generate_graph = model.generate_graph
    normalizers = {k: create_normalizer(state_dict=copy.deepcopy(v)).double() for k, v in OMAT_NORMALIZERS.items()}
    recorder.draws.clear()
    torch.manual_seed(SEED)
    out = model(data)
    (draw,) = recorder.draws
    batch_size = data.natoms.numel()
    pred_irreps = torch.zeros((batch_size, irreps_sum(2)))
    for subtarget in OUTPUT_TARGETS["stress"]["decomposition"]:
        irreps = OUTPUT_TARGETS[subtarget]["irrep_dim"]
        pred = normalizers[subtarget](out[subtarget])
        pred_irreps[:, max(0, irreps_sum(irreps - 1)) : irreps_sum(irreps)] = pred.view(batch_size, -1)
    stress = torch.einsum("ba, cb->ca", cg_change_mat(2), pred_irreps).view(batch_size, 3, 3)
    energy = elementrefs.double()(out["energy"].view(batch_size, -1), data).view(-1)
    forces = normalizers["forces"](out["forces"].view(-1, 3))
    return {"energy": energy.detach(), "forces": forces.detach(), "stress": stress.detach()}, draw


def make_model_case(name: str, stress_head: dict, out_dir: Path) -> None:
    torch.manual_seed(SEED)
    heads = {
        "energy": {"module": "equiformer_v2_energy_head"},
        "forces": {"module": "equiformer_v2_force_head"},
        "stress": stress_head,
    }
    model = HydraModel(backbone=dict(OMAT_BACKBONE), heads=copy.deepcopy(heads), pass_through_head_outputs=True)
    model = model.double().eval()
    randomise(model)
    elementrefs = element_references()
    config = {
        "model": {"name": "hydra", "pass_through_head_outputs": True, "backbone": OMAT_BACKBONE, "heads": heads},
        "outputs": {k: v for k, v in OUTPUT_TARGETS.items() if "parent" not in v},
        "trainer": "equiformerv2_forces",
    }
    checkpoint = {
        "epoch": 1,
        "step": 500,
        "state_dict": float32_state(model, "module."),
        "normalizers": OMAT_NORMALIZERS,
        "elementrefs": {"energy": {k: v.float() for k, v in elementrefs.state_dict().items()}},
        "config": config,
        "ema": ema_state(model),
        "amp": None,
    }
    torch.save(checkpoint, out_dir / f"{name}.pt")
    recorder = install_recorder("equiformer_v2", model)
    tensors: dict[str, torch.Tensor] = {}
    for structure, atoms in bulk_structures().items():
        data = batch_of(atoms)
        edge_index, shift, vector = edges(atoms, CUTOFF)
        out, draw = predict(model, recorder, data, edge_index, shift, vector, elementrefs)
        tensors.update(
            {
                **structure_inputs(structure, data, edge_index, shift, draw),
                f"{structure}.energy": out["energy"],
                f"{structure}.forces": out["forces"],
                f"{structure}.stress": out["stress"],
            }
        )
        print(f"{name:24s} {structure:7s} E={out['energy'].item():+.6f} S={out['stress'].flatten()[:3].tolist()}")
    save_golden(tensors, out_dir / f"{name}.safetensors")


# ------------------------------------------------------------------------------------------- neighbours
def tie_structures() -> dict[str, Atoms]:
    copper = bulk("Cu", "fcc", a=3.6)  # shells of 12, 6, 24: the 20th neighbour ties with 23 others
    salt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # shells of 6, 12, 8, 6, 24
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=6.0, periodic=False)
    slab.pbc = (True, True, False)
    near = bulk("Cu", "fcc", a=3.6)
    near.positions[0] += [0.004, -0.003, 0.002]  # splits the shells by less than the tolerance
    return {"copper": copper, "salt": salt, "slab": slab, "near_tie": near * (2, 1, 1)}


def make_neighbor_case(name: str, out_dir: Path) -> None:
    torch.set_default_dtype(torch.float32)  # fairchem's neighbour search works in float32 (and only there)
    tensors: dict[str, torch.Tensor] = {}
    for structure, atoms in tie_structures().items():
        data = batch_of(atoms)
        single = copy.copy(data)  # radius_graph_pbc builds part of its grid in float32
        single.pos, single.cell = data.pos.float(), data.cell.float()
        for strict in (False, True):
            edge_index, cell_offsets, _ = radius_graph_pbc(
                copy.copy(single), 6.0, 20, enforce_max_neighbors_strictly=strict, pbc=list(atoms.pbc)
            )
            counts = torch.bincount(edge_index[1], minlength=len(atoms))
            print(f"{name} {structure:9s} strict={strict!s:5s} neighbours per atom {sorted(set(counts.tolist()))}")
            if strict:
                tensors[f"{structure}.strict_counts"] = counts
            else:
                tensors[f"{structure}.edge_index"] = edge_index
                tensors[f"{structure}.edge_shift"] = cell_offsets.long()
        tensors.update(
            {
                f"{structure}.pos": data.pos,
                f"{structure}.z": data.atomic_numbers,
                f"{structure}.cell": data.cell,
                f"{structure}.pbc": data.pbc,
            }
        )
    metadata = {"fairchem_core": "1.10.0", "cutoff": "6.0", "max_neighbors": "20"}
    save_golden(tensors, out_dir / f"{name}.safetensors", metadata)
    torch.set_default_dtype(torch.float64)


CASES = {
    "eqv2_tiny_omat": lambda out: make_model_case("eqv2_tiny_omat", OMAT_STRESS, out),
    "eqv2_tiny_omat_variant": lambda out: make_model_case("eqv2_tiny_omat_variant", VARIANT_STRESS, out),
    "neighbors_oc22": lambda out: make_neighbor_case("neighbors_oc22", out),
}


def main() -> None:
    run_cases(__doc__.splitlines()[0], CASES)


if __name__ == "__main__":
    main()
