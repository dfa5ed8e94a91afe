"""FAENet: parity with the reference package faenet 0.1.3 (golden tensors), element table, symmetry, variants."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import zoo
from zoo.graph import AtomsGraph, GraphError, batch_graphs, radius_graph
from zoo.models import faenet_elements
from zoo.models.faenet import FAENet
from zoo.testing import assert_equivariant, molecule_graph, slab_graph

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "faenet" / "faenet.safetensors"
PARITY = 1e-9  # max |zoo - faenet| / max |faenet|, float64 (measured: <= 4e-15)
TINY = {
    "hidden_channels": 32,
    "num_filters": 24,
    "num_gaussians": 10,
    "num_interactions": 2,
    "tag_hidden_channels": 4,
    "pg_hidden_channels": 4,
    "cutoff": 4.0,
}


def golden() -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(FIXTURE), "pt") as handle:
        meta = json.loads(handle.metadata()["golden"])
    return load_file(str(FIXTURE)), meta


TENSORS, META = golden()


def section(case: str, part: str) -> dict[str, torch.Tensor]:
    prefix = f"{case}.{part}."
    return {key[len(prefix) :]: value for key, value in TENSORS.items() if key.startswith(prefix)}


def golden_graph(case: str) -> AtomsGraph:
    inputs = section(case, "input")
    return AtomsGraph(
        pos=inputs["pos"],
        z=inputs["z"],
        tags=inputs["tags"],
        batch=inputs["batch"],
        cell=inputs["cell"],
        pbc=torch.ones(len(inputs["cell"]), 3, dtype=torch.bool),
        natoms=inputs["natoms"],
        edge_index=inputs["edge_index"],
        edge_shift=inputs["edge_shift"],
    )


def oc20_slab(seed: int = 0) -> AtomsGraph:
    """The Cu(111) + O test slab with OC20 tags: 2 adsorbate, 1 top layer (ASE tag 1), 0 below."""
    graph = slab_graph(cutoff=4.0, seed=seed)
    graph.tags = torch.where(graph.z == 8, 2, torch.where(graph.tags == 1, 1, 0))
    return graph


def tiny(name: str = "faenet", **kwargs) -> FAENet:
    torch.manual_seed(0)
    return zoo.create_model(name, **{**TINY, **kwargs}).double().eval()


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("case", list(META["cases"]))
def test_matches_reference_package(case):
    """Same weights (loaded strict) and inputs as faenet 0.1.3; frame-averaging cases go through its
    ``FrameAveraging`` transform and ``model_forward``."""
    model = FAENet(**META["cases"][case]["zoo"]).double().eval()
    model.load_state_dict(section(case, "state"), strict=True)
    with torch.no_grad():
        out = model(golden_graph(case))
    expected = section(case, "output")
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].shape == value.shape
        assert (out[key] - value).abs().max().item() <= PARITY * value.abs().max().item(), key


@pytest.mark.reference
def test_reference_package_reproduces_the_fixture(tmp_path):
    """Re-run the golden script with faenet 0.1.3 (its own venv: ``ZOO_FAENET_PYTHON``, see the script)."""
    python = os.environ.get("ZOO_FAENET_PYTHON")
    if not python:
        pytest.skip("set ZOO_FAENET_PYTHON to the python of a venv with faenet==0.1.3")
    script = Path(__file__).resolve().parents[2] / "scripts" / "golden" / "make_faenet_golden.py"
    output = tmp_path / "faenet.safetensors"
    subprocess.run([python, str(script), "golden", "--output", str(output)], check=True)
    fresh = load_file(str(output))
    assert fresh.keys() == TENSORS.keys()
    assert all(torch.equal(fresh[key], TENSORS[key]) for key in TENSORS)


def test_element_table_is_the_reference_one():
    state = section("base", "state")
    embedding = FAENet(**META["cases"]["base"]["zoo"]).embed_block.phys_emb
    assert torch.equal(embedding.properties, state["embed_block.phys_emb.properties"].float())
    assert torch.equal(embedding.group, state["embed_block.phys_emb.group"])
    assert torch.equal(embedding.period, state["embed_block.phys_emb.period"])
    assert len(faenet_elements.PROPERTIES) == 86 and len(faenet_elements.GROUP) == 101


def test_reference_configurations():
    assert {"faenet", "faenet-is2re", "faenet-s2ef", "faenet-qm9"} <= set(zoo.list_architectures("faenet*"))
    is2re, s2ef, qm9 = (zoo.create_model(name) for name in ("faenet-is2re", "faenet-s2ef", "faenet-qm9"))
    assert (is2re.frames, is2re.group, s2ef.frames, s2ef.group, qm9.frames, qm9.group) == (
        "stochastic",
        "SE2",
        "stochastic",
        "E2",
        "stochastic",
        "E3",
    )
    assert is2re.metadata["task"] == "property" and not hasattr(is2re, "decoder")
    assert s2ef.metadata["force_mode"] == "direct" and s2ef.metadata["max_neighbors"] == 30
    assert isinstance(s2ef.decoder.model[1], torch.nn.BatchNorm1d) and s2ef.decoder.model[0].out_features == 256
    assert len(qm9.interaction_blocks) == 5 and not qm9.embed_block.use_tag and hasattr(qm9.embed_block, "lin_2")
    assert is2re.embed_block.phys_emb.n_properties == 14 and is2re.interaction_blocks[0].mp_type == "base"


# ------------------------------------------------------------------------------------------------ symmetry
def test_all_frames_are_exactly_equivariant():
    model = tiny(regress_forces="direct", frames="all", group="E3", tag_hidden_channels=0)
    report = assert_equivariant(model, molecule_graph(7, seed=1, cutoff=4.0))
    assert report.max_error < 1e-9
    batched = tiny(regress_forces="direct", graph_norm=False, tag_hidden_channels=0)
    graph = batch_graphs([molecule_graph(7, seed=1, cutoff=4.0), molecule_graph(5, seed=2, cutoff=4.0)])
    assert assert_equivariant(batched, graph).passed


def test_bare_network_is_not_equivariant():
    model = tiny(regress_forces="direct", frames=None, tag_hidden_channels=0)
    assert not assert_equivariant(model, molecule_graph(7, seed=1, cutoff=4.0), raise_on_failure=False).passed


def test_2d_frames_on_a_slab():
    model = tiny("faenet-s2ef", frames="all", pg_hidden_channels=4, tag_hidden_channels=4)
    graph = oc20_slab()
    reference = model(graph)
    angle = 1.1
    q = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, -1.0]],
        dtype=torch.float64,
    )  # rotation about z composed with z -> -z is NOT a symmetry of 2D frames; keep z: diag(.., 1)
    q[2, 2] = 1.0
    mirror = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    for transform in (q, mirror @ q):
        moved = graph.clone()
        moved.pos, moved.cell = graph.pos @ transform.T + torch.tensor([0.3, 0.2, 0.0]), graph.cell @ transform.T
        out = model(moved)
        assert torch.allclose(out["energy"], reference["energy"], atol=1e-10)
        assert torch.allclose(out["forces"], reference["forces"] @ transform.T, atol=1e-10)


def test_stochastic_frames_follow_the_generator():
    model = tiny("faenet-qm9", hidden_channels=32, pg_hidden_channels=4)
    graph = batch_graphs([molecule_graph(6, seed=s, cutoff=4.0) for s in range(4)])
    first = model(graph, generator=torch.Generator().manual_seed(1))["energy"]
    assert torch.equal(first, model(graph, generator=torch.Generator().manual_seed(1))["energy"])
    assert not torch.allclose(first, model(graph, generator=torch.Generator().manual_seed(2))["energy"])


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("decoder", ["simple", "mlp", "res", "res_updown"])
def test_forward_backward(decoder):
    config = {decoder: {"hidden_channels": 8, "norm": "layer" if decoder == "res" else "batch1d"}}
    model = tiny(regress_forces="direct", force_decoder_type=decoder, force_decoder_model_config=config).train()
    graph = batch_graphs([oc20_slab(0), oc20_slab(1)])
    out = model(graph)
    (out["energy"].sum() + out["forces"].square().sum()).backward()
    assert all(param.grad is not None and torch.isfinite(param.grad).all() for param in model.parameters())


@pytest.mark.parametrize("mp_type", ["base", "simple", "updownscale", "updownscale_base", "updown_local_env"])
def test_message_passing_types_run(mp_type):
    model = tiny(mp_type=mp_type, complex_mp=True, skip_co="add", frames="det")
    assert model(oc20_slab())["energy"].shape == (1,)


def test_checkpoint_round_trip(tmp_path):
    model = tiny("faenet-s2ef", frames="all", num_interactions=1)
    graph = oc20_slab()
    again = zoo.from_pretrained(zoo.save_pretrained(model, tmp_path / "faenet"))
    assert again.metadata == model.metadata
    expected, got = model(graph), again.eval()(graph)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs():
    model = tiny(frames="all")
    graph = oc20_slab()
    with pytest.raises(GraphError, match="tags"):
        model(radius_graph(AtomsGraph.build(graph.pos, graph.z, cell=graph.cell[0], pbc=graph.pbc[0]), 4.0))
    heavy = graph.clone()
    heavy.z = heavy.z.clone()
    heavy.z[0] = 90
    with pytest.raises(GraphError, match=r"1\.\.84"):
        model(heavy)
    lanthanide = graph.clone()
    lanthanide.z = lanthanide.z.clone()
    lanthanide.z[0] = 64
    with pytest.raises(GraphError, match="f-block"):
        model(lanthanide)
    bare = AtomsGraph.build(graph.pos, graph.z, tags=graph.tags)
    with pytest.raises(GraphError, match="radius_graph"):
        model(bare)
    assert model(radius_graph(bare, 4.0))["energy"].shape == (1,)
    tagged = graph.clone()
    tagged.tags = torch.full_like(graph.tags, 3)
    with pytest.raises(GraphError, match="tags"):
        model(tagged)
    with pytest.raises(ValueError, match="mp_type"):
        FAENet(mp_type="fancy")
    with pytest.raises(ValueError, match="hidden_channels"):
        FAENet(hidden_channels=16, tag_hidden_channels=8, pg_hidden_channels=8)
