"""fairchem DeNS EquiformerV2 checkpoints (``EqV2DeNSBackbone`` + DeNS heads) -> zoo ``dens=True``: golden
parity with fairchem-core 1.10.0, the head namings of both DeNS code generations, EMA, refusals, the cards.

Fixtures from scripts/golden/make_fairchem_dens_golden.py: a tiny DeNS model configured as fairchem's
``eqV2_31M_dens_mptrj.yml`` (energy, forces, stress) and one with the noise-level encoding and no stress head,
with random weights (the DeNS biases included) and fairchem's outputs for two clean bulk crystals.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden import golden_graph, relative
from safetensors.torch import load_file

import zoo
from zoo.converters import convert
from zoo.converters.fairchem import ConversionError, convert_state_dict, load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fairchem"
PARITY = 1e-6  # max |zoo - fairchem| / max |fairchem|, float64, same frame draws
CASES = {"eqv2_tiny_dens": ("energy", "forces", "stress"), "eqv2_tiny_dens_sigma": ("energy", "forces")}
DENS = "fairchem.core.models.equiformer_v2.equiformer_v2_dens."


@pytest.mark.parametrize("structure", ["copper", "salt"])
@pytest.mark.parametrize("case", list(CASES))
def test_dens_parity_with_fairchem(case, structure):
    """Measured (float64, same frame draws): energy 8e-12, forces 1.3e-7, stress 2.3e-8 relative."""
    model = convert("fairchem", FIXTURES / f"{case}.pt").double()
    tensors = load_file(FIXTURES / f"{case}.safetensors")
    graph = golden_graph(tensors, structure)
    out = model(graph, perpendicular=tensors[f"{structure}.perpendicular"])
    assert set(out) == set(CASES[case])
    for key in CASES[case]:
        assert relative(out[key], tensors[f"{structure}.{key}"]) <= PARITY, key
    deterministic = model(graph)
    assert relative(deterministic["energy"], tensors[f"{structure}.energy"]) <= 1e-6


def test_dens_biases_reach_the_outputs():
    """The force-encoding bias is the one DeNS parameter that acts at inference: without it parity fails."""
    model = convert("fairchem", FIXTURES / "eqv2_tiny_dens.pt").double()
    tensors = load_file(FIXTURES / "eqv2_tiny_dens.safetensors")
    graph, draw = golden_graph(tensors, "salt"), tensors["salt.perpendicular"]
    with torch.no_grad():
        model.force_embedding.bias.zero_()
    assert relative(model(graph, perpendicular=draw)["energy"], tensors["salt.energy"]) > 1e-6
    sigma = convert("fairchem", FIXTURES / "eqv2_tiny_dens_sigma.pt").double()
    sigma_tensors = load_file(FIXTURES / "eqv2_tiny_dens_sigma.safetensors")
    with torch.no_grad():
        sigma.noise_schedule_sigma_embedding.bias.zero_()
    out = sigma(golden_graph(sigma_tensors, "salt"), perpendicular=sigma_tensors["salt.perpendicular"])
    assert relative(out["energy"], sigma_tensors["salt.energy"]) > 1e-6


def test_dens_weights_map_one_to_one():
    """Every parameter equals its fairchem tensor, the denoising block and force-encoding weights (unused on
    clean structures) included."""
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_dens.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_dens.pt")
    assert model.dens and not model.dens_sigma_encoding
    assert model.metadata["source"]["layout"] == "hydra"
    state = checkpoint["state_dict"]
    names = {
        "energy_block.": "output_heads.energy.scalar_block.",
        "force_block.": "output_heads.forces.vector_block.",
        "denoising_pos_block.": "output_heads.forces.denoising_pos_block.",
        "stress_head.": "output_heads.stress.",
    }
    for name, param in model.named_parameters():
        prefix = next((p for p in names if name.startswith(p)), None)
        key = "module." + (names[prefix] + name.removeprefix(prefix) if prefix else "backbone." + name)
        assert torch.equal(param.detach(), state[key]), name
    sigma = convert("fairchem", FIXTURES / "eqv2_tiny_dens_sigma.pt")
    assert sigma.dens_sigma_encoding and sigma.stress_head is None
    assert torch.equal(
        sigma.noise_schedule_sigma_embedding.weight,
        load_checkpoint(FIXTURES / "eqv2_tiny_dens_sigma.pt")["state_dict"][
            "module.backbone.noise_schedule_sigma_embedding.weight"
        ],
    )


def test_dens_ema_pairs_every_trainable_parameter():
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_dens.pt")
    model = convert("fairchem", FIXTURES / "eqv2_tiny_dens.pt", use_ema=True)
    plain = convert("fairchem", FIXTURES / "eqv2_tiny_dens.pt")
    parameters = dict(model.named_parameters())
    keys = [k for k in checkpoint["state_dict"] if not k.endswith("distance_expansion.offset")]
    converted = convert_state_dict({k: checkpoint["state_dict"][k] for k in keys}, plain)
    trainable = [k for k in converted if k in parameters]
    assert len(trainable) == len(checkpoint["ema"]["shadow_params"])
    for name, shadow in zip(trainable, checkpoint["ema"]["shadow_params"], strict=True):
        assert torch.equal(parameters[name].detach(), shadow), name


def _rewrite(checkpoint: dict, backbone: str, heads: dict, renames: dict[str, str]) -> dict:
    model_config = checkpoint["config"]["model"]
    state = {}
    for key, value in checkpoint["state_dict"].items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    config = {
        **checkpoint["config"],
        "model": {**model_config, "backbone": {**model_config["backbone"], "model": backbone}, "heads": heads},
    }
    return dict(checkpoint, state_dict=state, config=config)


def test_earlier_dens_head_names_convert_identically(tmp_path):
    """The MPtrj DeNS configurations name the earlier DeNS code (``DeNSEnergyHead.energy_block``,
    ``DeNSForceHead.force_block``, class paths, ``use_denoising_energy``): the same model."""
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_dens.pt")
    heads = {
        "energy": {"module": DENS + "DeNSEnergyHead"},
        "forces": {"module": DENS + "DeNSForceHead"},
        "stress": {**checkpoint["config"]["model"]["heads"]["stress"], "module": DENS + "DeNSRank2Head"},
    }
    renames = {"energy.scalar_block.": "energy.energy_block.", "forces.vector_block.": "forces.force_block."}
    earlier = _rewrite(checkpoint, DENS + "EqV2DeNSBackbone", heads, renames)
    earlier["config"]["model"]["backbone"].update(use_denoising_energy=True, use_denoising_stress=False)
    torch.save(earlier, tmp_path / "earlier.pt")
    model = convert("fairchem", tmp_path / "earlier.pt")
    reference = convert("fairchem", FIXTURES / "eqv2_tiny_dens.pt")
    assert model.state_dict().keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


@pytest.mark.parametrize(
    ("backbone", "head", "module", "message"),
    [
        ("equiformer_v2_dens_backbone", "forces", "equiformer_v2_force_head", "needs a DeNS head"),
        ("equiformer_v2_dens_backbone", "energy", "equiformer_v2_energy_head", "needs a DeNS head"),
        ("equiformer_v2_backbone", "forces", "eqV2_DeNS_vector_head", "needs the DeNS backbone"),
        ("equiformer_v2_backbone", "stress", "dens_rank2_symmetric_head", "DeNS backbone"),
        ("equiformer_v2_dens_backbone", "stress", "rank2_symmetric_tensor_head", "rank2_symmetric_tensor_head"),
    ],
)
def test_mismatched_dens_heads_refused(tmp_path, backbone, head, module, message):
    checkpoint = load_checkpoint(FIXTURES / "eqv2_tiny_dens.pt")
    heads = dict(checkpoint["config"]["model"]["heads"])
    if "dens" not in backbone:
        heads["stress"] = {**heads["stress"], "module": "rank2_symmetric_head"}
    heads[head] = {**heads[head], "module": module}
    torch.save(_rewrite(checkpoint, backbone, heads, {}), tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match=message):
        convert("fairchem", tmp_path / "bad.pt")


def test_dens_options_checked_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="dens_sigma_encoding"):
        zoo.create_model("equiformer_v2", dens_sigma_encoding=True)
    model = convert("fairchem", FIXTURES / "eqv2_tiny_dens_sigma.pt")
    reloaded = zoo.load(str(zoo.save_pretrained(model, tmp_path / "checkpoint")))
    assert reloaded.dens and reloaded.dens_sigma_encoding
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name


@pytest.fixture
def no_login(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.utils._auth.get_token", lambda: None, raising=False)


def test_dens_card_loads_with_access(hub, cache, no_login):
    """Gated Hub file -> fairchem converter -> a DeNS model with energy, forces and stress."""
    checkpoint = FIXTURES / "eqv2_tiny_dens.pt"
    hub.add_repo(
        "facebook/OMAT24", {"eqV2_dens_31M_mp.pt": checkpoint.read_bytes()}, gated=True, granted_tokens={"hf_granted"}
    )
    model = zoo.load("equiformer-v2-31m-dens-mp-s2efs", token="hf_granted").double()
    tensors = load_file(FIXTURES / "eqv2_tiny_dens.safetensors")
    out = model(golden_graph(tensors, "copper"), perpendicular=tensors["copper.perpendicular"])
    assert model.dens
    assert relative(out["stress"], tensors["copper.stress"]) <= PARITY
