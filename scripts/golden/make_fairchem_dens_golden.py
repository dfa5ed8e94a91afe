"""Golden tensors from fairchem-core 1.10.0 for the DeNS EquiformerV2 (``EqV2DeNSBackbone`` and its heads), the
architecture of the ``eqV2_dens_*_mp.pt`` checkpoints (tests/fixtures/fairchem/).

Runs in the fairchem environment described in make_fairchem_golden.py (whose helpers it reuses, with those of
make_fairchem_omat_golden.py)::

    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_dens_golden.py            # every case
    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_dens_golden.py eqv2_tiny_dens

Cases: ``eqv2_tiny_dens``, a tiny hydra model configured as fairchem's ``configs/omat24/mptrj/
eqV2_31M_dens_mptrj.yml`` (DeNS backbone with force encoding, ``eqV2_DeNS_scalar_head``,
``eqV2_DeNS_vector_head`` and ``dens_rank2_symmetric_head``; the OMat normalisers and element references of
make_fairchem_omat_golden.py); ``eqv2_tiny_dens_sigma``, with ``use_noise_schedule_sigma_encoding`` and no
stress head. Weights are random and rounded to float32 (the force-embedding and sigma-embedding biases
included, so they change the outputs; an EMA in the first case only), the edges and frame draws fixed as in
make_fairchem_golden.py. The
inputs are clean structures (no ``denoising_pos_forward``): the outputs are what fairchem predicts for them,
denormalised as its trainer does (make_fairchem_omat_golden.predict).

Outputs: ``<case>.pt`` (fairchem checkpoint) and ``<case>.safetensors``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import fairchem.core.models.equiformer_v2.equiformer_v2_dens  # noqa: F401  (registers the DeNS modules)
import torch
from fairchem.core.models.base import HydraModel
from fairchem.core.modules.normalization.normalizer import create_normalizer
from make_fairchem_golden import (
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
from make_fairchem_omat_golden import (
    CUTOFF,
    OMAT_BACKBONE,
    OMAT_NORMALIZERS,
    OMAT_STRESS,
    OUTPUT_TARGETS,
    bulk_structures,
    element_references,
    predict,
)

DENS_BACKBONE = dict(
    OMAT_BACKBONE,
    model="equiformer_v2_dens_backbone",
    use_force_encoding=True,
    use_noise_schedule_sigma_encoding=False,
)
DENS_HEADS = {
    "energy": {"module": "eqV2_DeNS_scalar_head"},
    "forces": {"module": "eqV2_DeNS_vector_head"},
    "stress": {**OMAT_STRESS, "module": "dens_rank2_symmetric_head"},
}


def predict_energy_forces(model, recorder, data, edge_index, shift, vector, elementrefs) -> tuple[dict, torch.Tensor]:
    """Energy and forces as fairchem's trainer denormalises them (a model without a stress head)."""
    model.generate_graph = fixed_graph(data, edge_index, shift, vector)
    model.backbone.generate_graph = model.generate_graph
    forces_normalizer = create_normalizer(state_dict=copy.deepcopy(OMAT_NORMALIZERS["forces"])).double()
    recorder.draws.clear()
    torch.manual_seed(SEED)
    out = model(data)
    (draw,) = recorder.draws
    energy = elementrefs.double()(out["energy"].view(data.natoms.numel(), -1), data).view(-1)
    forces = forces_normalizer(out["forces"].view(-1, 3))
    return {"energy": energy.detach(), "forces": forces.detach()}, draw


def make_case(name: str, backbone: dict, heads: dict, out_dir: Path, *, with_ema: bool = True) -> None:
    torch.manual_seed(SEED)
    model = HydraModel(backbone=dict(backbone), heads=copy.deepcopy(heads), pass_through_head_outputs=True)
    model = model.double().eval()
    randomise(model)
    elementrefs = element_references()
    outputs = {k: v for k, v in OUTPUT_TARGETS.items() if "parent" not in v and (k in heads)}
    normalizers = {k: v for k, v in OMAT_NORMALIZERS.items() if "stress" in heads or not k.startswith("stress")}
    config = {
        "model": {"name": "hydra", "pass_through_head_outputs": True, "backbone": backbone, "heads": heads},
        "outputs": outputs,
        "trainer": "equiformerv2_forces",
    }
    checkpoint = {
        "epoch": 1,
        "step": 500,
        "state_dict": float32_state(model, "module."),
        "normalizers": normalizers,
        "elementrefs": {"energy": {k: v.float() for k, v in elementrefs.state_dict().items()}},
        "config": config,
        "ema": ema_state(model) if with_ema else None,  # None keeps the second fixture small
        "amp": None,
    }
    torch.save(checkpoint, out_dir / f"{name}.pt")
    recorder = install_recorder("equiformer_v2", model)
    run = predict if "stress" in heads else predict_energy_forces
    tensors: dict[str, torch.Tensor] = {}
    for structure, atoms in bulk_structures().items():
        data = batch_of(atoms)
        edge_index, shift, vector = edges(atoms, CUTOFF)
        out, draw = run(model, recorder, data, edge_index, shift, vector, elementrefs)
        tensors.update(
            {
                **structure_inputs(structure, data, edge_index, shift, draw),
                **{f"{structure}.{key}": value for key, value in out.items()},
            }
        )
        print(f"{name:22s} {structure:7s} E={out['energy'].item():+.6f} |F|max={out['forces'].abs().max():.4f}")
    save_golden(tensors, out_dir / f"{name}.safetensors")


CASES = {
    "eqv2_tiny_dens": lambda out: make_case("eqv2_tiny_dens", DENS_BACKBONE, DENS_HEADS, out),
    "eqv2_tiny_dens_sigma": lambda out: make_case(
        "eqv2_tiny_dens_sigma",
        {**DENS_BACKBONE, "use_noise_schedule_sigma_encoding": True},
        {k: v for k, v in DENS_HEADS.items() if k != "stress"},
        out,
        with_ema=False,
    ),
}


def main() -> None:
    run_cases(__doc__.splitlines()[0], CASES)


if __name__ == "__main__":
    main()
