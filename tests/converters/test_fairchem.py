"""fairchem 1.x checkpoints -> zoo: golden parity with fairchem-core 1.10.0, both layouts, EMA, key handling.

The fixtures come from scripts/golden/make_fairchem_golden.py (fairchem in its own venv): checkpoints in
fairchem's format and fairchem's denormalised outputs in float64 for a Cu(111)+O slab and a molecule, with
the edges and fairchem's random edge-frame draws recorded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from golden import golden_graph, relative
from safetensors.torch import load_file

import zoo
from zoo.converters import convert, get_converter
from zoo.converters.fairchem import ConversionError, convert_state_dict, load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fairchem"
PARITY = 1e-6  # max |zoo - fairchem| / max |fairchem|, float64, same frame draws
# A deterministic frame instead of fairchem's draws moves the S2-grid activations (UPSTREAM-NOTES): measured
# up to 2e-8 eV/A (tiny, lmax 2) and 1.4e-5 eV/A (medium, lmax 4) on these fixtures.
FRAME_TOLERANCE = 1e-4
EQV2_CASES = ["eqv2_tiny_monolithic", "eqv2_medium_monolithic", "eqv2_tiny_hydra"]
STRUCTURES = ["slab", "molecule"]


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, bool], torch.nn.Module]:
    return {
        (case, ema): convert("fairchem", FIXTURES / f"{case}.pt", use_ema=ema).double()
        for case in EQV2_CASES
        for ema in (False, True)
    }


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("ema", [False, True], ids=["state_dict", "ema"])
@pytest.mark.parametrize("case", EQV2_CASES)
def test_parity_with_fairchem(converted, case, ema, structure):
    tensors = load_file(FIXTURES / f"{case}.safetensors")
    model = converted[(case, ema)]
    suffix = "_ema" if ema else ""
    graph = golden_graph(tensors, structure)
    out = model(graph, perpendicular=tensors[f"{structure}.perpendicular"])
    assert relative(out["energy"], tensors[f"{structure}.energy{suffix}"]) <= PARITY
    assert relative(out["forces"], tensors[f"{structure}.forces{suffix}"]) <= PARITY
    deterministic = model(graph)
    assert (deterministic["forces"] - tensors[f"{structure}.forces{suffix}"]).abs().max() <= FRAME_TOLERANCE
    assert relative(deterministic["energy"], tensors[f"{structure}.energy{suffix}"]) <= 1e-6


def test_weights_map_one_to_one():
    """Every converted parameter equals its fairchem tensor, including those with zero output gradient."""
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_monolithic.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_monolithic.pt")
    state = {key.removeprefix("module.module."): value for key, value in checkpoint["state_dict"].items()}
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), state[name]), name
    hydra = convert("fairchem", FIXTURES / "eqv2_tiny_hydra.pt")
    hydra_state = load_checkpoint(FIXTURES / "eqv2_tiny_hydra.pt")["state_dict"]
    assert torch.equal(
        hydra.energy_block.grid_mlp[0].weight, hydra_state["module.output_heads.energy.energy_block.grid_mlp.0.weight"]
    )
    assert torch.equal(hydra.force_block.proj.bias, hydra_state["module.output_heads.forces.force_block.proj.bias"])


def test_ema_pairs_trainable_parameters_in_order():
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_monolithic.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_monolithic.pt", use_ema=True)
    shadows = checkpoint["ema"]["shadow_params"]
    assert len(shadows) == sum(1 for _ in model.parameters())
    for (name, param), shadow in zip(model.named_parameters(), shadows, strict=True):
        assert torch.equal(param.detach(), shadow), name


@pytest.mark.parametrize("prefix", ["", "module.", "module.module."])
def test_any_wrapper_prefix_and_passthrough(prefix):
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_monolithic.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_monolithic.pt")
    state = {prefix + key.removeprefix("module.module."): value for key, value in checkpoint["state_dict"].items()}
    converted = convert_state_dict(state, model)
    assert converted.keys() == model.state_dict().keys()
    assert convert_state_dict(converted, model).keys() == converted.keys()  # already converted: unchanged


def test_derived_constants_dropped_and_rebuilt():
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_monolithic.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_monolithic.pt")
    dropped = len(checkpoint["state_dict"]) - len(model.state_dict())
    assert dropped > 500  # Wigner index maps, S2 grids and index buffers repeated under many names
    assert not any(re.search(r"SO3_grid|SO3_rotation|mappingReduced|expand_index", k) for k in model.state_dict())


def test_normalisers_and_references_carried(converted):
    mono = converted[("eqv2_tiny_monolithic", False)]
    assert mono.energy_mean == pytest.approx(-0.7554450631141663, rel=1e-7)
    assert mono.forces_std == pytest.approx(2.887317180633545, rel=1e-7)
    hydra = converted[("eqv2_tiny_hydra", False)]
    assert hydra.use_element_references and hydra.energy_references[1].item() == pytest.approx(-3.0)
    assert hydra.metadata["source"] == {"format": "fairchem", "layout": "hydra", "weights": "state_dict"}


def test_unsupported_and_broken_checkpoints(tmp_path):
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_monolithic.pt")
    bad = dict(checkpoint, config={**checkpoint["config"], "model_attributes": {"use_m_share_rad": True}})
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="use_m_share_rad"):
        convert("fairchem", tmp_path / "bad.pt")
    torch.save(dict(checkpoint, config={"model": "gemnet_oc"}), tmp_path / "gemnet.pt")
    with pytest.raises(ConversionError, match="gemnet_oc"):
        convert("fairchem", tmp_path / "gemnet.pt")
    (tmp_path / "truncated.pt").write_bytes((FIXTURES / "eqv2_tiny_monolithic.pt").read_bytes()[:1000])
    with pytest.raises(ConversionError, match="weights_only"):
        convert("fairchem", tmp_path / "truncated.pt")
    extra = dict(checkpoint, state_dict={**checkpoint["state_dict"], "module.module.unknown.weight": torch.ones(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ConversionError, match=r"unknown\.weight"):
        convert("fairchem", tmp_path / "extra.pt")
    no_ema = dict(checkpoint, ema=None)
    torch.save(no_ema, tmp_path / "no_ema.pt")
    with pytest.raises(ConversionError, match="EMA"):
        convert("fairchem", tmp_path / "no_ema.pt", use_ema=True)


def test_registered_lazily():
    assert get_converter("fairchem").__name__ == "convert_fairchem"


def test_converted_model_round_trips(tmp_path, converted):
    model = convert("fairchem", FIXTURES / "eqv2_tiny_hydra.pt")
    folder = zoo.save_pretrained(model, tmp_path / "checkpoint")
    reloaded = zoo.load(str(folder)).double()
    tensors = load_file(FIXTURES / "eqv2_tiny_hydra.safetensors")
    graph = golden_graph(tensors, "slab")
    expected = converted[("eqv2_tiny_hydra", False)](graph)
    out = reloaded(graph)
    assert torch.equal(out["energy"], expected["energy"])
    assert torch.equal(out["forces"], expected["forces"])
