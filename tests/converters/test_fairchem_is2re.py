"""Energy-only (IS2RE "direct", ``regress_forces: False``) fairchem checkpoints -> zoo: golden parity.

fairchem 1.10's ``EquiformerV2-IS2RE-ODAC`` and ``eSCN-IS2RE-ODAC`` predict the relaxed energy from the initial
structure with no force head. The fixtures come from scripts/golden/make_fairchem_is2re_golden.py (fairchem-core
1.10.0 in its own venv): tiny monolithic checkpoints in that form (legacy config, ``trainer: energy``, a
``target`` normaliser only; an EMA for eSCN) and fairchem's denormalised energies in float64 for a Cu(111)+O
slab and a molecule, with the edges and fairchem's edge-frame draws recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden import golden_graph, relative
from safetensors.torch import load_file

import zoo
from zoo.calculators.ase import ModelTaskError
from zoo.converters import convert
from zoo.converters.fairchem import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fairchem"
PARITY = 1e-6  # max |zoo - fairchem| / max |fairchem|, float64, same frame draws
CASES = [("eqv2_tiny_is2re", False), ("escn_tiny_is2re", False), ("escn_tiny_is2re", True)]
STRUCTURES = ["slab", "molecule"]


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, bool], torch.nn.Module]:
    return {(case, ema): convert("fairchem", FIXTURES / f"{case}.pt", use_ema=ema).double() for case, ema in CASES}


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(("case", "ema"), CASES, ids=["eqv2", "escn", "escn-ema"])
def test_energy_parity_with_fairchem(converted, case, ema, structure):
    """Measured (float64, same frame draws): EquiformerV2 5e-9, eSCN 5e-14 relative."""
    tensors = load_file(FIXTURES / f"{case}.safetensors")
    model = converted[(case, ema)]
    expected = tensors[f"{structure}.energy" + ("_ema" if ema else "")]
    graph = golden_graph(tensors, structure)
    out = model(graph, perpendicular=tensors[f"{structure}.perpendicular"])
    assert set(out) == {"energy"}
    assert out["energy"].dtype == torch.float64
    assert relative(out["energy"], expected) <= PARITY
    # the model's own contribution, without the normaliser's mean that dominates these small outputs
    mean = model.energy_mean
    assert relative(out["energy"] - mean, expected - mean) <= PARITY
    assert relative(model(graph)["energy"], expected) <= PARITY  # deterministic frame: energies barely move


@pytest.mark.parametrize("case", ["eqv2_tiny_is2re", "escn_tiny_is2re"])
def test_energy_only_model(converted, case):
    checkpoint = load_checkpoint(FIXTURES / f"{case}.pt")
    assert checkpoint["config"]["model_attributes"]["regress_forces"] is False
    model = converted[(case, False)]
    assert model.regress_forces is False and not hasattr(model, "force_block")
    assert not any(".force_block." in key or key.startswith("force_block.") for key in model.state_dict())
    assert model.metadata["task"] == "property" and "force_mode" not in model.metadata
    assert model.metadata["units"]["energy"] == "eV" and "forces" not in model.metadata["units"]
    assert model.forces_mean == 0.0 and model.forces_std == 1.0  # the checkpoint has no force normaliser


@pytest.mark.parametrize("case", ["eqv2_tiny_is2re", "escn_tiny_is2re"])
def test_calculator_refuses_energy_only_model(converted, case):
    with pytest.raises(ModelTaskError, match="property model, not an interatomic potential"):
        zoo.calculator(converted[(case, False)])


def test_round_trip_keeps_the_task(tmp_path, converted):
    model = convert("fairchem", FIXTURES / "escn_tiny_is2re.pt")
    reloaded = zoo.load(str(zoo.save_pretrained(model, tmp_path / "checkpoint"))).double()
    assert reloaded.metadata["task"] == "property"
    tensors = load_file(FIXTURES / "escn_tiny_is2re.safetensors")
    graph = golden_graph(tensors, "slab")
    assert torch.equal(reloaded(graph)["energy"], converted[("escn_tiny_is2re", False)](graph)["energy"])
    with pytest.raises(ModelTaskError):
        zoo.calculator(reloaded)
