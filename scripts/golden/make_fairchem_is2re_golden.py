"""Golden tensors from fairchem-core 1.10.0 for energy-only (IS2RE "direct") EquiformerV2 and eSCN checkpoints.

fairchem 1.10's ``EquiformerV2-IS2RE-ODAC`` and ``eSCN-IS2RE-ODAC`` are monolithic models built with
``regress_forces: False``: no force block, one output (the relaxed energy predicted from the initial
structure), old-style normalisers with a ``target`` entry only. This script writes a tiny checkpoint of each
family in that form, reusing the helpers of make_fairchem_golden.py (same inputs, fixed graph, recorded
frame draws, randomised float32 weights, EMA), in the same reference environment::

    /tmp/fcvenv/bin/python scripts/golden/make_fairchem_is2re_golden.py

Outputs in tests/fixtures/fairchem/: ``<case>.pt`` (the fairchem checkpoint) and ``<case>.safetensors``
(inputs, edges, draws, the denormalised energy from the ``state_dict`` weights and, for eSCN, from the EMA
weights).
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch
from fairchem.core.models.equiformer_v2 import equiformer_v2_deprecated as eqv2_mono
from fairchem.core.models.escn.escn import eSCN
from fairchem.core.modules.exponential_moving_average import ExponentialMovingAverage
from fairchem.core.modules.normalization.normalizer import create_normalizer
from make_fairchem_golden import (
    EQV2_COMMON,
    EQV2_TINY,
    ESCN_COMMON,
    ESCN_TINY,
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
    structures,
)

# The energy trainer normalises only the target (old-style keys); a small mean keeps the model's own output
# visible in the relative parity.
IS2RE_NORMALIZERS = {"target": {"mean": torch.tensor(-0.0625), "std": torch.tensor(2.5)}}
# Smaller than EQV2_TINY (one layer, 8 channels, 30 elements); its checkpoint holds no EMA (about
# 400 state-dict entries, most of them derived constants, already take 250 kB). eSCN's holds one.
EQV2_IS2RE = dict(
    EQV2_TINY,
    num_layers=1,
    sphere_channels=8,
    attn_hidden_channels=8,
    attn_alpha_channels=4,
    ffn_hidden_channels=8,
    edge_channels=8,
    max_num_elements=30,  # Cu is the heaviest element of the inputs
)
CASES = {  # name: (family, configuration, EMA?)
    "eqv2_tiny_is2re": ("equiformer_v2", EQV2_IS2RE, False),
    "escn_tiny_is2re": ("escn", ESCN_TINY, True),
}


def build(kind: str, config: dict) -> tuple[torch.nn.Module, dict]:
    """An energy-only monolithic model and its legacy checkpoint config (``trainer: energy``)."""
    common = EQV2_COMMON if kind == "equiformer_v2" else ESCN_COMMON
    attributes = {**common, **config, "regress_forces": False}
    model = eqv2_mono.EquiformerV2(**attributes) if kind == "equiformer_v2" else eSCN(**attributes)
    assert not hasattr(model, "force_block")
    return model, {"model": kind, "model_attributes": attributes, "trainer": "energy"}


def energy(model, recorder, data, edge_index, shift, vector) -> tuple[torch.Tensor, torch.Tensor]:
    model.generate_graph = fixed_graph(data, edge_index, shift, vector)
    recorder.draws.clear()
    torch.manual_seed(SEED)
    out = model(data)
    assert set(out) == {"energy"}, sorted(out)
    (draw,) = recorder.draws
    normalizer = create_normalizer(state_dict=copy.deepcopy(IS2RE_NORMALIZERS["target"])).double()
    return normalizer.denorm(out["energy"].detach().reshape(-1)), draw


def make_case(name: str, kind: str, config: dict, with_ema: bool, out_dir: Path) -> None:
    torch.manual_seed(SEED)
    model, ckpt_config = build(kind, config)
    model = model.double().eval()
    randomise(model)
    checkpoint = {
        "epoch": 3,
        "step": 1000,
        "state_dict": float32_state(model, "module.module."),
        "normalizers": IS2RE_NORMALIZERS,
        "config": ckpt_config,
        "ema": ema_state(model) if with_ema else None,
        "amp": None,
    }
    torch.save(checkpoint, out_dir / f"{name}.pt")

    ema_model = copy.deepcopy(model)
    if with_ema:
        ema = ExponentialMovingAverage([p for p in ema_model.parameters() if p.requires_grad], decay=0.999)
        ema.load_state_dict(
            {**checkpoint["ema"], "shadow_params": [s.double() for s in checkpoint["ema"]["shadow_params"]]}
        )
        ema.copy_to()
    recorder = install_recorder(kind, model)
    ema_recorder = recorder if kind == "equiformer_v2" else install_recorder(kind, ema_model)
    cutoff = EQV2_COMMON["max_radius"] if kind == "equiformer_v2" else ESCN_COMMON["cutoff"]
    tensors: dict[str, torch.Tensor] = {}
    for structure, atoms in structures().items():
        data = batch_of(atoms)
        edge_index, shift, vector = edges(atoms, cutoff)
        plain, draw = energy(model, recorder, data, edge_index, shift, vector)
        if with_ema:
            ema_energy, draw_ema = energy(ema_model, ema_recorder, data, edge_index, shift, vector)
            assert torch.equal(draw, draw_ema)
            tensors[f"{structure}.energy_ema"] = ema_energy
        tensors.update(
            {
                **structure_inputs(structure, data, edge_index, shift, draw),
                f"{structure}.energy": plain,
            }
        )
        print(f"{name:20s} {structure:9s} E={plain.item():+.6f}")
    save_golden(tensors, out_dir / f"{name}.safetensors")


def main() -> None:
    run_cases(__doc__.splitlines()[0], {name: partial(make_case, name, *spec) for name, spec in CASES.items()})


if __name__ == "__main__":
    main()
