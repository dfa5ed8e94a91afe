"""EGNN: official parity (golden tensors), parameter counts, equivariance in n dimensions, forces, checkpoints."""

from __future__ import annotations

import pytest
import torch
from golden import FIXTURES as GOLDEN_FIXTURES
from golden import assert_parity as assert_within
from golden import load_golden as read_golden
from golden import section

import zoo
from zoo.graph import AtomsGraph, GraphError, batch_graphs, radius_graph
from zoo.models.egnn import EGCL, EGNN, complete_edge_index
from zoo.testing import assert_equivariant, bulk_graph, molecule_graph, nbody_graph, slab_graph

FIXTURES = GOLDEN_FIXTURES / "egnn"
PARITY = 1e-10  # max |zoo - official| relative to max(1, max |official|), float64


def load_golden(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    return read_golden(FIXTURES / f"{name}.safetensors")


def assert_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert_within(actual, expected, PARITY)


def tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(name, **kwargs).double()


TINY = {
    "egnn": {"in_node_nf": 4, "hidden_nf": 8, "n_layers": 2, "attention": True},
    "egnn-nbody": {"hidden_nf": 8, "n_layers": 2},
    "egnn-qm9": {"hidden_nf": 8, "n_layers": 2},
    "egnn-potential": {"hidden_nf": 8, "n_layers": 2, "cutoff": 4.0, "elements": [1, 6, 7, 8, 11, 17, 29]},
}


def tiny_input(name: str) -> AtomsGraph:
    if name == "egnn":
        generator = torch.Generator().manual_seed(3)
        graphs = [molecule_graph(5, seed=2), molecule_graph(3, seed=4)]
        for graph in graphs:
            graph.x = torch.randn(graph.pos.shape[0], 4, dtype=torch.float64, generator=generator)
        return batch_graphs(graphs)
    if name == "egnn-nbody":
        return batch_graphs([nbody_graph(5, seed=1), nbody_graph(4, seed=2)])
    if name == "egnn-qm9":
        return batch_graphs([molecule_graph(6, seed=1), molecule_graph(4, seed=2)])
    return batch_graphs([molecule_graph(6, seed=1, cutoff=4.0), bulk_graph(cutoff=4.0)])


def random_orthogonal(dim: int, generator: torch.Generator, proper: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


# ----------------------------------------------------------------------------------------------- structure
def test_registered_names_and_parameter_counts():
    assert {"egnn", "egnn-nbody", "egnn-qm9", "egnn-potential"} <= set(zoo.list_architectures("egnn*"))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(zoo.create_model("egnn-nbody")) == 134_020
    assert count(zoo.create_model("egnn-qm9")) == 745_224


def test_official_key_names_and_initialisation():
    model = zoo.create_model("egnn-nbody")
    keys = set(model.state_dict())
    assert {"embedding.weight", "gcl_0.edge_mlp.0.weight", "gcl_3.coord_mlp.2.weight", "gcl_1.node_mlp.2.bias"} <= keys
    assert {"gcl_0.coord_mlp_vel.2.bias"} <= keys and "gcl_0.coord_mlp.2.bias" not in keys
    last = model.gcl_0.coord_mlp[2].weight
    assert last.abs().max() <= 0.001 * (6 / (64 + 1)) ** 0.5  # xavier_uniform, gain 0.001
    qm9 = zoo.create_model("egnn-qm9", hidden_nf=8, n_layers=1)
    assert not any("coord_mlp" in key for key in qm9.state_dict())  # the official QM9 layer has none
    assert {"node_dec.0.weight", "graph_dec.2.bias", "gcl_0.att_mlp.0.weight"} <= set(qm9.state_dict())


def test_complete_edge_index_matches_brute_force():
    batch = torch.tensor([1, 0, 1, 1, 0, 2])
    edges = complete_edge_index(batch)
    expected = {(j, i) for i in range(6) for j in range(6) if i != j and batch[i] == batch[j]}
    assert set(map(tuple, edges.T.tolist())) == expected and edges.shape[1] == len(expected)


def test_metadata():
    assert zoo.create_model("egnn-potential", cutoff=4.5).metadata["cutoff"] == 4.5
    assert zoo.create_model("egnn-qm9", target="gap").metadata["units"] == {"gap": "eV"}
    assert zoo.create_model("egnn-nbody").metadata["task"] == "dynamics"


# ------------------------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("case", ["default", "options", "velocity"])
def test_layer_matches_official(case):
    tensors, configs = load_golden("egcl")
    layer = EGCL(**configs[case]).double()
    layer.load_state_dict(section(tensors, f"{case}.state"), strict=True)
    inputs = section(tensors, f"{case}.input")
    h, coord = layer(
        inputs["h"],
        inputs["edge_index"],
        inputs["coord"],
        vel=inputs.get("vel"),
        edge_attr=inputs.get("edge_attr"),
        node_attr=inputs.get("node_attr"),
    )
    assert_parity(h, tensors[f"{case}.output.h"])
    assert_parity(coord, tensors[f"{case}.output.coord"])


def test_nbody_matches_official():
    tensors, config = load_golden("nbody")
    n = config.pop("n_nodes")
    model = zoo.create_model("egnn-nbody", **config).double()
    model.load_state_dict(section(tensors, "state"), strict=True)
    loc, vel, charges = (tensors[f"input.{key}"] for key in ("loc", "vel", "charges"))
    graphs = [
        AtomsGraph.build(loc[k : k + n], charges=charges[k : k + n], vel=vel[k : k + n]) for k in range(0, len(loc), n)
    ]
    assert_parity(model(batch_graphs(graphs))["pos"], tensors["output.loc"])


@pytest.mark.parametrize("case", ["paper", "node_attr"])
def test_qm9_matches_official(case):
    tensors, configs = load_golden("qm9")
    model = zoo.create_model("egnn-qm9", **configs[case]).double()
    model.load_state_dict(section(tensors, f"{case}.state"), strict=True)
    charges, positions = tensors["input.charges"], tensors["input.positions"]
    graphs = [AtomsGraph.build(p[c > 0], c[c > 0].long()) for c, p in zip(charges, positions, strict=True)]
    assert_parity(model(batch_graphs(graphs))["homo"], tensors[f"{case}.output.pred"])


# -------------------------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("velocity", [False, True])
def test_layer_and_network_equivariant_in_n_dimensions(dim, velocity):
    generator = torch.Generator().manual_seed(dim)
    torch.manual_seed(dim)
    network = EGNN(3, hidden_nf=8, n_layers=2, in_edge_nf=1, attention=True, velocity=velocity, tanh=True).double()
    h0 = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    x = torch.randn(6, dim, generator=generator, dtype=torch.float64)
    vel = torch.randn(6, dim, generator=generator, dtype=torch.float64) if velocity else None
    edge_index = complete_edge_index(torch.tensor([0, 0, 0, 0, 1, 1]))
    edge_attr = torch.randn(edge_index.shape[1], 1, generator=generator, dtype=torch.float64)
    h, y = network.encode(h0, x, edge_index, vel=vel, edge_attr=edge_attr)
    assert (y - x).abs().max() > 1e-6  # the coordinates moved
    shift = torch.randn(dim, generator=generator, dtype=torch.float64)
    for proper in (True, False):
        q = random_orthogonal(dim, generator, proper)
        h2, y2 = network.encode(
            h0, x @ q.T + shift, edge_index, vel=None if vel is None else vel @ q.T, edge_attr=edge_attr
        )
        torch.testing.assert_close(h2, h, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(y2, y @ q.T + shift, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(TINY))
def test_equivariance(name):
    model = tiny(name, **TINY[name]).eval()
    types = {"egnn": {"pos": "position", "node_features": "scalar"}, "egnn-qm9": {"homo": "scalar"}}.get(name)
    report = assert_equivariant(model, tiny_input(name), output_types=types)
    assert report.passed


def test_potential_equivariant_on_slab():
    model = tiny("egnn-potential", **TINY["egnn-potential"]).eval()
    assert assert_equivariant(model, slab_graph(cutoff=4.0)).passed


# ---------------------------------------------------------------------------------------- training / files
@pytest.mark.parametrize("name", list(TINY))
def test_forward_backward(name):
    model = tiny(name, **TINY[name]).train()
    out = model(tiny_input(name))
    loss = sum(value.square().mean() for value in out.values())
    loss.backward()
    # as upstream, the node update of the last layer does not reach the predicted positions
    unused = "gcl_1.node_mlp." if name == "egnn-nbody" else None
    for key, param in model.named_parameters():
        if unused is not None and key.startswith(unused):
            assert param.grad is None, key
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), key


@pytest.mark.parametrize("name", list(TINY))
def test_checkpoint_round_trip(name, tmp_path):
    model = tiny(name, **TINY[name]).eval()
    graph = tiny_input(name)
    again = zoo.from_pretrained(zoo.save_pretrained(model, tmp_path / name))
    assert again.metadata == model.metadata
    expected, got = model(graph), again(graph)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)


# ---------------------------------------------------------------------------------------------- potential
def test_forces_are_minus_energy_gradient():
    model = tiny("egnn-potential", **TINY["egnn-potential"]).eval()
    graph = bulk_graph(cutoff=4.0)
    forces = model(graph)["forces"]
    step = 1e-5
    numeric = torch.zeros_like(forces)
    for atom in range(forces.shape[0]):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = graph.clone()
                moved.pos = graph.pos.clone()
                moved.pos[atom, axis] += sign * step
                energies.append(model(moved)["energy"].item())
            numeric[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
    torch.testing.assert_close(forces, numeric, atol=1e-7, rtol=1e-6)
    assert forces.abs().max() > 1e-4


def test_energy_is_continuous_at_the_cutoff():
    model = tiny("egnn-potential", **TINY["egnn-potential"]).eval()
    energies = []
    for distance in (4.0 - 1e-7, 4.0 + 1e-7):
        graph = AtomsGraph.build(torch.tensor([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], dtype=torch.float64), [6, 8])
        energies.append(model(radius_graph(graph, 4.5))["energy"].item())
    assert abs(energies[0] - energies[1]) < 1e-9


def test_potential_works_under_no_grad_and_keeps_input_untouched():
    model = tiny("egnn-potential", **TINY["egnn-potential"]).eval()
    graph = molecule_graph(4, cutoff=4.0)
    with torch.no_grad():
        out = model(graph)
    assert out["forces"].shape == (4, 3) and not graph.pos.requires_grad


# ------------------------------------------------------------------------------------------------- errors
def test_missing_field_is_named():
    model = tiny("egnn-nbody", **TINY["egnn-nbody"])
    graph = AtomsGraph.build(torch.randn(3, 3, dtype=torch.float64), charges=torch.ones(3, 1, dtype=torch.float64))
    with pytest.raises(GraphError, match=r"graph\.vel"):
        model(graph)


def test_bad_inputs():
    qm9 = tiny("egnn-qm9", **TINY["egnn-qm9"])
    with pytest.raises(GraphError, match=r"\[16\]"):
        qm9(AtomsGraph.build(torch.randn(2, 3, dtype=torch.float64), [6, 16]))
    with pytest.raises(GraphError, match="periodic"):
        qm9(bulk_graph())
    with pytest.raises(GraphError, match="float32"):
        qm9(molecule_graph(3, dtype=torch.float32))
    potential = tiny("egnn-potential", **TINY["egnn-potential"])
    with pytest.raises(GraphError, match="radius_graph"):
        potential(AtomsGraph.build(torch.randn(2, 3, dtype=torch.float64), [6, 8]))
    with pytest.raises(ValueError, match="edges"):
        zoo.create_model("egnn", edges="knn")


def test_isolated_atoms_and_target_normalisation():
    potential = tiny("egnn-potential", **TINY["egnn-potential"]).eval()
    single = radius_graph(AtomsGraph.build(torch.zeros(1, 3, dtype=torch.float64), [8]), 4.0)
    out = potential(single)
    assert torch.isfinite(out["energy"]).all() and torch.equal(out["forces"], torch.zeros(1, 3, dtype=torch.float64))
    raw = tiny("egnn-qm9", **TINY["egnn-qm9"]).eval()
    scaled = tiny("egnn-qm9", **TINY["egnn-qm9"], target="gap", target_mean=2.0, target_mad=3.0).eval()
    molecule = molecule_graph(3)
    graph = batch_graphs(
        [AtomsGraph.build(torch.zeros(1, 3, dtype=torch.float64), [1]), AtomsGraph.build(molecule.pos, molecule.z)]
    )
    torch.testing.assert_close(scaled(graph)["gap"], 3.0 * raw(graph)["homo"] + 2.0)
