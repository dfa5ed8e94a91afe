"""Edge chunking of EquiformerV2 (attention, edge-degree embedding, force block, rank-2 stress head) and eSCN:
chunked == unchunked in float64 (many chunks, nodes with more edges than a chunk), random and given edge frames
drawn once, Wigner matrices built per chunk, gradients, the calculator and predict options. Without chunking
the outputs are the golden ones (tests/models/test_equiformer_v2.py, test_escn.py, converters/test_fairchem.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from chunk_systems import SYSTEMS, molecular, periodic, slab

import zoo
import zoo.models.equiformer_v2
import zoo.nn.rank2
import zoo.nn.so3
from zoo.converters import convert
from zoo.graph import from_ase, radius_graph
from zoo.models.equiformer_v2 import EdgeDegreeEmbedding, SO2EquivariantGraphAttention
from zoo.models.escn import MessageBlock
from zoo.nn.chunking import edge_chunk_size, edge_chunks
from zoo.nn.rank2 import Rank2SymmetricHead

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fairchem"
CUTOFF = 5.0
RELATIVE = 1e-10  # max |chunked - unchunked| / max |unchunked|, float64
EQV2 = dict(
    num_layers=2,
    sphere_channels=8,
    attn_hidden_channels=8,
    num_heads=2,
    attn_alpha_channels=4,
    attn_value_channels=4,
    ffn_hidden_channels=8,
    lmax=2,
    mmax=1,
    edge_channels=8,
    grid_resolution=8,
    max_radius=CUTOFF,
)
ESCN = dict(
    num_layers=2,
    sphere_channels=8,
    hidden_channels=8,
    edge_channels=8,
    lmax=2,
    mmax=1,
    num_sphere_samples=16,
    cutoff=CUTOFF,
)
STRESS_HEAD = {"use_source_target_embedding": True, "edge_level_mlp": True, "isotropic_mean": 0.3}


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "eqv2":
        model = zoo.create_model("equiformer_v2", **EQV2, **kwargs)
    elif name == "eqv2-stress":
        model = zoo.create_model("equiformer_v2", **EQV2, stress_head=STRESS_HEAD, **kwargs)
    elif name == "eqv2-omat":  # converted: fairchem's OMat configuration, mean of edge features then MLPs
        model = convert("fairchem", FIXTURES / "eqv2_tiny_omat.pt")
    elif name == "escn":
        model = zoo.create_model("escn", **ESCN, **kwargs)
    else:
        raise KeyError(name)
    return model.double().eval()


MODELS = ["eqv2", "eqv2-stress", "eqv2-omat", "escn"]


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: build(name) for name in MODELS}


def graph_of(atoms: Atoms):
    """All neighbours within the cutoff (no max_neighbors): up to 42 edges per Cu atom."""
    return radius_graph(from_ase(atoms, dtype=torch.float64), CUTOFF)


def run(model: torch.nn.Module, max_edges: int | None, call: Callable[[], dict]) -> dict:
    with edge_chunk_size(model, max_edges):
        return call()


def assert_close(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        scale = float(np.abs(np.asarray(value)).max())
        difference = float(np.abs(np.asarray(actual[key]) - np.asarray(value)).max())
        assert difference <= RELATIVE * scale, (key, difference, scale)


def detached(out: dict) -> dict:
    return {key: value.detach().numpy() for key, value in out.items()}


@pytest.mark.parametrize("max_edges", [1, 7, 20])
@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("name", MODELS)
def test_chunked_equals_unchunked(models, name, system, max_edges):
    model, atoms = models[name], SYSTEMS[system]()
    graph = graph_of(atoms)
    chunks = edge_chunks(graph.edge_index, len(atoms), max_edges)
    assert len(chunks) >= 3
    degree = int(torch.bincount(graph.edge_index[1]).max())
    assert degree > max_edges or any(0 < c.num_edges < max_edges for c in chunks[:-1])
    if system != "molecule":
        assert degree > max_edges  # nodes with more edges than a chunk: a chunk of their own
    expected = detached(model(graph))
    actual = detached(run(model, max_edges, lambda: model(graph)))
    assert model.edge_chunk_size is None
    assert ("stress" in expected) == name.startswith(("eqv2-stress", "eqv2-omat"))
    assert_close(actual, expected)


@pytest.mark.parametrize("name", ["eqv2", "escn"])
def test_random_frames_are_drawn_once_for_all_layers_and_chunks(name, monkeypatch):
    model = build(name, edge_frame="random")
    graph = graph_of(slab())
    num_edges = graph.edge_index.shape[1]
    torch.manual_seed(7)
    expected = detached(model(graph))
    drawn: list[torch.Tensor] = []
    edge_wigner = zoo.nn.so3.edge_wigner
    monkeypatch.setattr(
        zoo.nn.so3,
        "edge_wigner",
        lambda vec, lmax, perpendicular: (
            drawn.append(perpendicular) or edge_wigner(vec, lmax, perpendicular=perpendicular)
        ),
    )
    torch.manual_seed(7)
    actual = detached(run(model, 7, lambda: model(graph)))
    assert_close(actual, expected)
    # every layer's chunks are slices of one draw, fairchem's torch.rand_like(vec) - 0.5 of the unchunked call
    torch.manual_seed(7)
    draw = torch.rand(num_edges, 3, dtype=torch.float64) - 0.5
    per_layer = torch.cat(drawn).reshape(-1, num_edges, 3)
    assert per_layer.shape[0] == (4 if name == "eqv2" else 2) and len(drawn) > 3 * per_layer.shape[0]
    assert all(torch.equal(layer, draw) for layer in per_layer)


@pytest.mark.parametrize("name", ["eqv2", "escn"])
def test_given_perpendiculars_are_sliced_per_chunk(models, name):
    model, graph = models[name], graph_of(periodic())
    perpendicular = torch.rand(
        graph.edge_index.shape[1], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    perpendicular = perpendicular - 0.5
    expected = detached(model(graph, perpendicular=perpendicular))
    assert_close(detached(run(model, 20, lambda: model(graph, perpendicular=perpendicular))), expected)
    with pytest.raises(ValueError, match="perpendicular must match vec in shape"):
        run(model, 20, lambda: model(graph, perpendicular=perpendicular[1:]))


@pytest.mark.parametrize("name", ["eqv2-stress", "escn"])
def test_wigner_matrices_are_built_per_chunk(models, name, monkeypatch):
    model, graph = models[name], graph_of(periodic())
    sizes: list[int] = []
    edge_wigner = zoo.nn.so3.edge_wigner
    monkeypatch.setattr(
        zoo.nn.so3, "edge_wigner", lambda vec, *a, **k: sizes.append(len(vec)) or edge_wigner(vec, *a, **k)
    )
    num_edges, max_edges = graph.edge_index.shape[1], 100
    largest = max(c.num_edges for c in edge_chunks(graph.edge_index, graph.num_nodes, max_edges))
    run(model, max_edges, lambda: model(graph))
    layers = 1 + 2 + 1 if name.startswith("eqv2") else 2  # edge-degree embedding, 2 layers, force block
    assert len(sizes) == layers * len(edge_chunks(graph.edge_index, graph.num_nodes, max_edges))
    assert max(sizes) == largest <= max_edges < num_edges


def test_gradients_chunked_equal_unchunked():
    """Training: parameter gradients through the checkpointed chunks (recomputed in the backward pass)."""
    model = build("eqv2-stress").train()
    graph = graph_of(periodic())

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        out = model(graph)
        (out["energy"].sum() + out["forces"].square().sum() + out["stress"].square().sum()).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    expected = gradients()
    actual = run(model, 7, gradients)
    assert len(actual) == len(expected) > 0
    for a, e in zip(actual, expected, strict=True):
        assert (a - e).abs().max() <= RELATIVE * max(float(e.abs().max()), 1e-30)


@pytest.mark.parametrize("name", MODELS)
def test_chunk_not_smaller_than_the_edges_changes_nothing(models, name, monkeypatch):
    model, graph = models[name], graph_of(slab())
    monkeypatch.setattr(zoo.models.equiformer_v2, "chunked_scatter_sum", None)  # must not be called
    monkeypatch.setattr(zoo.models.escn, "chunked_scatter_sum", None)
    monkeypatch.setattr(zoo.nn.rank2, "chunked_scatter_sum", None)
    expected = model(graph)
    actual = run(model, graph.edge_index.shape[1], lambda: model(graph))
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_set_edge_chunk_size_reaches_every_edge_module(models):
    kinds = (EdgeDegreeEmbedding, SO2EquivariantGraphAttention, Rank2SymmetricHead, MessageBlock)
    for name in ("eqv2-stress", "escn"):
        model = models[name]
        modules = [m for m in model.modules() if isinstance(m, kinds)]
        assert len(modules) == (2 + 2 + 1 if name == "eqv2-stress" else 2)
        model.set_edge_chunk_size(64)
        try:
            assert model.edge_chunk_size == 64 and all(m.edge_chunk_size == 64 for m in modules)
        finally:
            model.set_edge_chunk_size(None)
        assert all(m.edge_chunk_size is None for m in modules)
        with pytest.raises(ValueError, match="positive integer"):
            model.set_edge_chunk_size(0)


@pytest.mark.parametrize("name", ["eqv2-stress", "escn"])
def test_calculator_option(models, name, monkeypatch):
    model = models[name]
    calls = []
    for module in (zoo.models.equiformer_v2, zoo.models.escn, zoo.nn.rank2):
        original = module.chunked_scatter_sum
        monkeypatch.setattr(module, "chunked_scatter_sum", lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k))
    atoms = periodic()
    atoms.calc = zoo.calculator(model)
    expected = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if name == "eqv2-stress":
        expected["stress"] = atoms.get_stress()
    assert not calls
    chunked = atoms.copy()
    chunked.calc = zoo.calculator(model, max_edges_per_chunk=7)
    actual = {"energy": chunked.get_potential_energy(), "forces": chunked.get_forces()}
    assert len(calls) == (1 + 2 + 1 + 1 if name == "eqv2-stress" else 2)  # every layer and head chunked
    if name == "eqv2-stress":
        actual["stress"] = chunked.get_stress()
    assert_close(actual, expected)
    assert model.edge_chunk_size is None


def test_predict_option(models):
    model = models["eqv2-omat"]
    items = [periodic(), slab(), molecular()]
    expected = zoo.predict(model, items, batch_size=2)
    results = zoo.predict(model, items, batch_size=2, max_edges_per_chunk=9)
    for result, reference in zip(results, expected, strict=True):
        assert_close(result, reference)
