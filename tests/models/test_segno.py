"""SEGNO: official parity (golden tensors), parameter count, equivariance in n dimensions, checkpoints."""

from __future__ import annotations

import pytest
import torch
from golden import FIXTURES as GOLDEN_FIXTURES
from golden import assert_parity as assert_within
from golden import load_golden as read_golden
from golden import section

import zoo
from zoo.graph import AtomsGraph, GraphError, batch_graphs, radius_graph
from zoo.models.egnn import complete_edge_index, dynamics_features
from zoo.models.segno import SEGNO, checkpoint_filter_fn
from zoo.testing import assert_equivariant, molecule_graph, nbody_graph

FIXTURES = GOLDEN_FIXTURES / "segno"
PARITY = 1e-10  # max |zoo - official| relative to max(1, max |official|), float64


def load_golden(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    return read_golden(FIXTURES / f"{name}.safetensors")


def assert_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert_within(actual, expected, PARITY)


def md_graph(num: int, seed: int) -> AtomsGraph:
    graph = molecule_graph(num, seed=seed, cutoff=2.5)
    graph.vel = 0.05 * torch.randn(num, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return graph


TINY = {
    "segno-nbody": (
        {"hidden_nf": 8, "n_layers": 3},
        lambda: batch_graphs([nbody_graph(5, seed=1), nbody_graph(3, seed=2)]),
    ),
    "segno-md": ({"hidden_nf": 8, "n_layers": 2}, lambda: batch_graphs([md_graph(6, 1), md_graph(4, 2)])),
}


def tiny(name: str) -> tuple[torch.nn.Module, AtomsGraph]:
    torch.manual_seed(0)
    kwargs, graph = TINY[name]
    return zoo.create_model(name, **kwargs).double(), graph()


def random_orthogonal(dim: int, generator: torch.Generator, proper: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


# ----------------------------------------------------------------------------------------------- structure
def test_parameter_count_and_defaults():
    model = zoo.create_model("segno-nbody")
    assert sum(p.numel() for p in model.parameters()) == 33_602
    assert model.n_layers == 8 and model.dt == 0.125
    assert model.layer.coord_mlp[2].bias is not None  # the official N-body phi_x ends with a bias
    md = zoo.create_model("segno-md")
    assert md.integrator == "gated" and md.layer.coord_mlp[2].bias is None and md.metadata["bond_cutoff"] == 2.5


def test_checkpoint_filter_passes_zoo_state_dicts_through():
    model = zoo.create_model("segno-nbody", hidden_nf=4)
    state = model.state_dict()
    assert checkpoint_filter_fn(state, model).keys() == state.keys()
    official = {("module." + k[len("layer.") :] if k.startswith("layer.") else k): v for k, v in state.items()}
    assert checkpoint_filter_fn(official, model).keys() == state.keys()
    with pytest.raises(KeyError, match="missing"):
        checkpoint_filter_fn({}, model)


# ------------------------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("case", ["charged", "gravity"])
def test_nbody_matches_official(case):
    tensors, configs = load_golden("nbody")
    config = dict(configs[case])
    n = config.pop("n_nodes")
    model = zoo.create_model("segno-nbody", **config).double()
    model.load_state_dict(checkpoint_filter_fn(section(tensors, f"{case}.state"), model), strict=True)
    loc, vel, charges = (tensors[f"input.{key}"] for key in ("loc", "vel", "charges"))
    graphs = [
        AtomsGraph.build(loc[k : k + n], charges=charges[k : k + n], vel=vel[k : k + n]) for k in range(0, len(loc), n)
    ]
    out = model(batch_graphs(graphs))  # 100 systems: the batch the official code is hard-coded for
    assert_parity(out["pos"], tensors[f"{case}.output.loc"])
    assert_parity(out["vel"], tensors[f"{case}.output.vel"])


def test_md22_matches_official():
    tensors, config = load_golden("md22")
    model = zoo.create_model("segno-md", **config).double()
    model.load_state_dict(checkpoint_filter_fn(section(tensors, "state"), model), strict=True)
    loc, vel, z, bonds = (tensors[f"input.{key}"] for key in ("loc", "vel", "z", "bonds"))
    n = len(z)
    shift = torch.zeros(bonds.shape[1], 3, dtype=torch.long)
    graphs = [
        AtomsGraph.build(loc[k : k + n], z, vel=vel[k : k + n], edge_index=bonds, edge_shift=shift)
        for k in range(0, len(loc), n)
    ]
    graph = batch_graphs(graphs)
    out = model(graph)
    assert_parity(out["pos"], tensors["output.loc"])
    assert_parity(out["vel"], tensors["output.vel"])
    edge_index = graph.edge_index
    radial = (graph.pos[edge_index[1]] - graph.pos[edge_index[0]]).square().sum(1, keepdim=True)
    h0, edge_attr = dynamics_features(graph, "molecule", edge_index, radial)
    h, _, _ = model.integrate(h0, graph.pos, graph.vel, edge_index, edge_attr)
    assert_parity(h, tensors["output.h"])


# -------------------------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("integrator", ["semi_implicit_euler", "gated"])
def test_integrate_equivariant_in_n_dimensions(dim, integrator):
    generator = torch.Generator().manual_seed(dim)
    torch.manual_seed(dim)
    model = SEGNO("gravity", hidden_nf=8, n_layers=3, integrator=integrator, norm_diff=True).double()
    h0 = torch.rand(6, 1, generator=generator, dtype=torch.float64)
    x = torch.randn(6, dim, generator=generator, dtype=torch.float64)
    v = torch.randn(6, dim, generator=generator, dtype=torch.float64)
    edge_index = complete_edge_index(torch.tensor([0, 0, 0, 1, 1, 1]))
    radial = (x[edge_index[1]] - x[edge_index[0]]).square().sum(1, keepdim=True)
    h, y, w = model.integrate(h0, x, v, edge_index, radial)
    shift = torch.randn(dim, generator=generator, dtype=torch.float64)
    for proper in (True, False):
        q = random_orthogonal(dim, generator, proper)
        h2, y2, w2 = model.integrate(h0, x @ q.T + shift, v @ q.T, edge_index, radial)
        torch.testing.assert_close(h2, h, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(y2, y @ q.T + shift, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(w2, w @ q.T, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(TINY))
def test_equivariance(name):
    model, graph = tiny(name)
    assert assert_equivariant(model.eval(), graph).passed


def test_semi_implicit_euler_step():
    """With phi_x = 0 the acceleration vanishes: x moves by n_layers * dt * v and v is unchanged."""
    model, graph = tiny("segno-nbody")
    torch.nn.init.zeros_(model.layer.coord_mlp[2].weight)
    torch.nn.init.zeros_(model.layer.coord_mlp[2].bias)
    out = model(graph)
    torch.testing.assert_close(out["vel"], graph.vel)
    torch.testing.assert_close(out["pos"], graph.pos + 3 * model.dt * graph.vel)


# ---------------------------------------------------------------------------------------- training / files
@pytest.mark.parametrize("name", list(TINY))
def test_forward_backward(name):
    model, graph = tiny(name)
    out = model.train()(graph)
    (out["pos"].square().mean() + out["vel"].square().mean()).backward()
    # as upstream, phi_v (coord_mlp_vel) exists but the semi-implicit Euler integrator does not use it
    unused = ("layer.coord_mlp_vel.",) if name == "segno-nbody" else ()
    for key, param in model.named_parameters():
        if key.startswith(unused):
            assert param.grad is None, key
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), key


@pytest.mark.parametrize("name", list(TINY))
def test_checkpoint_round_trip(name, tmp_path):
    model, graph = tiny(name)
    again = zoo.from_pretrained(zoo.save_pretrained(model.eval(), tmp_path / name))
    assert again.metadata == model.metadata
    expected, got = model(graph), again(graph)
    assert all(torch.equal(expected[key], got[key]) for key in ("pos", "vel"))


def test_errors():
    model, _ = tiny("segno-md")
    with pytest.raises(GraphError, match="radius_graph"):
        model(AtomsGraph.build(torch.randn(3, 3, dtype=torch.float64), [6, 1, 1], vel=torch.zeros(3, 3)))
    graph = radius_graph(AtomsGraph.build(torch.randn(3, 3, dtype=torch.float64), [6, 1, 1]), 3.0)
    with pytest.raises(GraphError, match=r"graph\.vel"):
        model(graph)
    with pytest.raises(ValueError, match="dt only applies"):
        SEGNO(integrator="gated", dt=0.1)
