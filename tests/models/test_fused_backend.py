"""Models on the fused kernels (``backend=``): the same outputs, forces and parameter gradients as their own
PyTorch code, official outputs through the fused path, and clear errors where a model has no fused path."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from ase.build import add_adsorbate, fcc111
from golden import FIXTURES as GOLDEN_FIXTURES
from golden import golden_graph, load_golden, relative, section
from safetensors.torch import load_file

import zoo
from zoo.converters import convert
from zoo.graph import AtomsGraph, batch_graphs, radius_graph
from zoo.graph.ase_io import from_ase
from zoo.kernels import KernelError, set_backend
from zoo.testing import bulk_graph, molecule_graph, nbody_graph, slab_graph
from zoo.train.config import TrainConfig

HAS_SCATTER = importlib.util.find_spec("torch_scatter") is not None
BACKENDS = [
    "torch",
    "compile",
    "auto",
    pytest.param("torch_scatter", marks=pytest.mark.skipif(not HAS_SCATTER, reason="torch-scatter not installed")),
]
TOLERANCE = {"rtol": 1e-9, "atol": 1e-10}


ELEMENTS = [1, 6, 7, 8, 11, 13, 17, 29]  # those of the test graphs
CASES = {
    "egnn-qm9": ({"hidden_nf": 16, "n_layers": 3, "node_attr": True}, "homo"),
    "egnn-potential": ({"hidden_nf": 16, "n_layers": 3, "cutoff": 4.0, "elements": ELEMENTS}, "energy"),
    "fa-gnn-nbody": ({"hidden_nf": 12, "n_layers": 3}, "pos"),
}


def _input(name: str) -> AtomsGraph:
    if name == "egnn-qm9":
        return batch_graphs([molecule_graph(6, seed=1), molecule_graph(4, seed=2)])
    if name == "egnn-potential":
        return batch_graphs([molecule_graph(6, seed=1, cutoff=4.0), bulk_graph(cutoff=4.0), slab_graph(cutoff=4.0)])
    return batch_graphs([nbody_graph(5, seed=1), nbody_graph(4, seed=2), nbody_graph(6, seed=3)])


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(name, **CASES[name][0]).double()


def _outputs_and_grads(model: torch.nn.Module, graph: AtomsGraph, key: str) -> list[torch.Tensor]:
    """The model's output, its forces where it has them, and d/dθ of a loss on both (forces: double backward)."""
    out = model(graph)
    loss = out[key].square().sum()
    values = [out[key]]
    if "forces" in out:
        values.append(out["forces"])
        loss = loss + out["forces"].square().sum()
    return values + list(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_fused_model_equals_its_own_code(name, backend):
    """Outputs, forces (egnn-potential: by autograd through the fused op) and every parameter gradient."""
    if name == "egnn-potential" and backend == "torch_scatter":
        pytest.skip("torch_scatter has no second derivatives (tested in tests/kernels/test_message.py)")
    model, graph, key = _model(name), _input(name), CASES[name][1]
    expected = _outputs_and_grads(model, graph, key)
    set_backend(model, backend)
    got = _outputs_and_grads(model, graph, key)
    for g, w in zip(got, expected, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCE)
    set_backend(model, None)  # and back to the model's own code
    torch.testing.assert_close(model(graph)[key], expected[0], rtol=0, atol=0)


def test_official_qm9_outputs_through_the_fused_path():
    """The official EGNN QM9 network's golden outputs (attention, node_attr) reproduced by the fused kernels."""
    tensors, configs = load_golden(GOLDEN_FIXTURES / "egnn" / "qm9.safetensors")
    model = zoo.create_model("egnn-qm9", **configs["node_attr"]).double()
    model.load_state_dict(section(tensors, "node_attr.state"), strict=True)
    set_backend(model, "torch")
    charges, positions = tensors["input.charges"], tensors["input.positions"]
    graphs = [AtomsGraph.build(p[c > 0], c[c > 0].long()) for c, p in zip(charges, positions, strict=True)]
    expected = tensors["node_attr.output.pred"]
    got = model(batch_graphs(graphs))["homo"]
    assert (got - expected).abs().max() <= 1e-10 * max(1.0, expected.abs().max().item())


def test_csr_path_is_bitwise_deterministic():
    model, graph = _model("egnn-potential"), _input("egnn-potential")
    set_backend(model, "torch")
    first = _outputs_and_grads(model, graph, "energy")
    second = _outputs_and_grads(model, graph, "energy")
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_embedded_demo_loads_with_a_backend():
    plain = zoo.load("egnn-emt-demo", dtype=torch.float64)
    fused = zoo.load("egnn-emt-demo", dtype=torch.float64, backend="compile")
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.rattle(0.05, seed=0)
    graph = radius_graph(from_ase(slab, dtype=torch.float64), 4.0)
    for key in ("energy", "forces"):
        torch.testing.assert_close(fused(graph)[key], plain(graph)[key], **TOLERANCE)


def test_models_without_a_fused_path_say_why():
    with pytest.raises(KernelError, match="gcl_0 updates coordinates"):
        set_backend(zoo.create_model("egnn-nbody", hidden_nf=8, n_layers=2), "torch")
    with pytest.raises(KernelError, match="SEGNO has no fused message-passing path"):
        set_backend(zoo.create_model("segno-nbody", hidden_nf=8), "torch")
    with pytest.raises(KernelError, match=r"backend must be None .* or one of"):
        set_backend(_model("egnn-qm9"), "cuda")
    with pytest.raises(KernelError, match="cannot use the fused message passing: mlp must be"):
        set_backend(zoo.create_model("egnn-qm9", hidden_nf=8, n_layers=2, act_fn="leaky_relu"), "torch")
    model = _model("egnn-qm9")
    with pytest.raises(KernelError):
        set_backend(model, "no-such")
    assert all(layer.backend is None for layer in model.layers())  # nothing half-set


def test_training_config_takes_a_backend():
    config = TrainConfig.model_validate(
        {"model": {"architecture": "fa-gnn-nbody", "backend": "torch"}, "data": {"batch_size": 4}}
    )
    assert config.model.backend == "torch"
    from zoo.train.run import _build_model

    model = _build_model(config, None, torch.float64)  # what `zoo train` builds from the config
    assert [layer.backend for layer in model.layers()] == ["torch"] * model.n_layers


# --- eSCN and EquiformerV2 on the SO(2) rotation kernels ------------------------------------------------------------

FAIRCHEM = GOLDEN_FIXTURES / "fairchem"
SO2_CASES = ["eqv2_medium_monolithic", "escn_medium_monolithic", "eqv2_tiny_omat"]


@pytest.mark.parametrize("case", SO2_CASES)
def test_official_outputs_through_the_so2_kernels(case):
    """fairchem's golden energies and forces (same frame draws) with the rotations by gather_rotate and
    rotate_back_sum; equal to the model's own code to round-off, parameter gradients included."""
    tensors = load_file(FAIRCHEM / f"{case}.safetensors")
    model = convert("fairchem", FAIRCHEM / f"{case}.pt").double()
    structure = "salt" if "omat" in case else "slab"
    graph = golden_graph(tensors, structure)
    perpendicular = tensors[f"{structure}.perpendicular"]

    def run():
        out = model(graph, perpendicular=perpendicular)
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        return [out["energy"], out["forces"], *torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)]

    expected = run()
    set_backend(model, "torch")
    got = run()
    assert relative(got[0], tensors[f"{structure}.energy"]) <= 1e-6
    assert relative(got[1], tensors[f"{structure}.forces"]) <= 1e-6
    for g, w in zip(got, expected, strict=True):
        if w is not None:
            torch.testing.assert_close(g, w, **TOLERANCE)


def test_so2_backends_are_checked():
    model = convert("fairchem", FAIRCHEM / "escn_medium_monolithic.pt")
    with pytest.raises(KernelError, match="SO\\(2\\) rotation kernels take backend in"):
        set_backend(model, "compile")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CASES))
def test_triton_on_cuda_equals_own_code(name):
    """EGNN's attention gate and cutoff-envelope edge weights inside the Triton kernels (and FA-GNN), float64."""
    model, key = _model(name).cuda(), CASES[name][1]
    graph = _input(name).to("cuda")
    expected = _outputs_and_grads(model, graph, key)
    set_backend(model, "triton")
    got = _outputs_and_grads(model, graph, key)
    for g, w in zip(got, expected, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["eqv2_medium_monolithic", "escn_medium_monolithic"])
def test_so2_triton_on_cuda(case):
    tensors = load_file(FAIRCHEM / f"{case}.safetensors")
    model = convert("fairchem", FAIRCHEM / f"{case}.pt").double().cuda()
    graph = golden_graph(tensors, "slab").to("cuda")
    perpendicular = tensors["slab.perpendicular"].cuda()
    expected = model(graph, perpendicular=perpendicular)
    set_backend(model, "triton")
    got = model(graph, perpendicular=perpendicular)
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], expected[key], **TOLERANCE)


def test_layers_share_one_csr_view_per_forward(monkeypatch):
    """The receiver-sorted view of the edges is built once per forward pass, not once per layer, and built anew
    for another graph or after an in-place change of the edges."""
    from zoo.kernels import message

    calls = []
    real = message.build_csr
    monkeypatch.setattr(message, "build_csr", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    model, key = _model("egnn-potential"), CASES["egnn-potential"][1]
    graph = _input("egnn-potential")
    expected = model(graph)[key]
    set_backend(model, "torch")
    torch.testing.assert_close(model(graph)[key], expected, **TOLERANCE)
    assert len(calls) == 1  # 3 layers
    edge_index = graph.edge_index.clone()
    out = message.fused_aggregate(torch.randn(graph.pos.shape[0], 16), edge_index, None, _mlp16(), backend="torch")
    assert len(calls) == 2
    message.fused_aggregate(torch.randn(graph.pos.shape[0], 16), edge_index, None, _mlp16(), backend="torch")
    assert len(calls) == 2
    edge_index[0, 0] = edge_index[0, 1]  # same tensor, changed in place: a new view
    message.fused_aggregate(torch.randn(graph.pos.shape[0], 16), edge_index, None, _mlp16(), backend="torch")
    assert len(calls) == 3 and out.shape == (graph.pos.shape[0], 16)
    import gc
    import weakref

    alive = weakref.ref(edge_index)  # the memo keeps no edge tensor (and so no graph) alive
    del edge_index, out  # (out: its autograd graph holds the plan)
    gc.collect()
    assert alive() is None


def _mlp16() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.SiLU())
