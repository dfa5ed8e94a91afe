"""Frame averaging: exact symmetry of a non-equivariant backbone, the stochastic mode in expectation, batching
over frames, periodic cells, 2D frames, degenerate geometry."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import zoo
from zoo.geometry.frames import DegenerateFramesWarning
from zoo.graph import AtomsGraph, batch_graphs, edge_vectors, node_graph_index, num_graphs
from zoo.models.frame_averaging import FrameAveraged, frame_average
from zoo.testing import assert_equivariant, molecule_graph, slab_graph
from zoo.testing.equivariance import random_orthogonal


class CoordinateMLP(torch.nn.Module):
    """Not equivariant at all: an MLP of each atom's raw coordinates gives an energy term, a 'force', a
    'predicted position' and a 'stress' contribution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
        self.calls: list[int] = []

    def forward(self, graph) -> dict[str, torch.Tensor]:
        self.calls.append(num_graphs(graph))
        out = self.mlp(graph.pos)  # [N, 16]
        batch = node_graph_index(graph)
        energy = out.new_zeros(num_graphs(graph)).index_add(0, batch, out[:, 0])
        stress = out.new_zeros(num_graphs(graph), 9).index_add(0, batch, out[:, 7:16]).view(-1, 3, 3)
        return {"energy": energy, "forces": out[:, 1:4], "pos": graph.pos + out[:, 4:7], "stress": stress}


class EdgeMLP(torch.nn.Module):
    """Not equivariant: energy = sum over edges of an MLP of the raw (periodic) edge vector."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))

    def forward(self, graph) -> dict[str, torch.Tensor]:
        vec, _ = edge_vectors(graph)
        out = self.mlp(vec)  # [E, 4]
        target = graph.edge_index[1]
        per_atom = out.new_zeros(graph.pos.shape[0], 4).index_add(0, target, out)
        energy = out.new_zeros(num_graphs(graph)).index_add(0, node_graph_index(graph), per_atom[:, 0])
        return {"energy": energy, "forces": per_atom[:, 1:]}


def two_molecules() -> AtomsGraph:
    return batch_graphs([molecule_graph(6, seed=1), molecule_graph(5, seed=2)])


def test_bare_backbone_is_not_equivariant():
    report = assert_equivariant(CoordinateMLP(), two_molecules(), raise_on_failure=False)
    assert not report.passed and report.max_error > 1e-2


def test_all_e3_frames_make_an_mlp_exactly_equivariant():
    model = FrameAveraged(CoordinateMLP(), frames="all", group="E3")
    report = assert_equivariant(model, two_molecules())  # rotation, reflection, translation, permutation
    assert report.max_error < 1e-10, str(report)


def test_se3_frames_are_rotation_but_not_reflection_equivariant():
    model = FrameAveraged(CoordinateMLP(), frames="all", group="SE3")
    assert assert_equivariant(model, two_molecules(), parity=False).max_error < 1e-10
    assert not assert_equivariant(model, two_molecules(), raise_on_failure=False).passed


def test_periodic_cell_is_rotated_with_the_frames():
    graph = batch_graphs([slab_graph(cutoff=3.5, seed=0), slab_graph(cutoff=3.5, seed=1)])  # periodic in-plane
    assert not assert_equivariant(EdgeMLP(), graph, raise_on_failure=False).passed
    assert assert_equivariant(FrameAveraged(EdgeMLP(), frames="all"), graph).max_error < 1e-10


def test_registered_zoo_model_can_be_wrapped():
    torch.manual_seed(0)
    backbone = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=1, cutoff=4.0)
    model = FrameAveraged(backbone, frames="all", group="SE3")
    assert assert_equivariant(model, molecule_graph(6, cutoff=4.0), parity=False).passed
    assert model.metadata["cutoff"] == 4.0 and model.metadata["frame_averaging"]["group"] == "SE3"


def test_velocity_inputs_and_position_outputs():
    torch.manual_seed(0)
    backbone = zoo.create_model("egnn-nbody", hidden_nf=8, n_layers=2)
    generator = torch.Generator().manual_seed(4)
    pos = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    vel = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    charges = torch.tensor([[1.0], [-1.0], [1.0], [1.0], [-1.0], [-1.0]], dtype=torch.float64)
    graph = AtomsGraph.build(pos, vel=vel, charges=charges)
    assert assert_equivariant(FrameAveraged(backbone, frames="all"), graph).max_error < 1e-10


@pytest.mark.parametrize("group", ["E2", "2D", "SE2"])
def test_2d_frames_keep_z_and_are_symmetric_about_it(group):
    model = FrameAveraged(CoordinateMLP(), frames="all", group=group).double()
    graph = slab_graph()
    reference = model(graph)
    angle = 0.7
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    shift = torch.tensor([1.3, -0.4, 0.0], dtype=torch.float64)
    transforms = [rotation] + ([mirror @ rotation] if group != "SE2" else [])
    for q in transforms:
        moved = graph.clone()
        moved.pos, moved.cell = graph.pos @ q.T + shift, graph.cell @ q.T
        out = model(moved)
        assert torch.allclose(out["energy"], reference["energy"], atol=1e-10)
        assert torch.allclose(out["forces"], reference["forces"] @ q.T, atol=1e-10)
        assert torch.allclose(out["pos"], reference["pos"] @ q.T + shift, atol=1e-10)
    tilted = graph.clone()
    tilt = random_orthogonal(torch.Generator().manual_seed(0), proper=True)
    tilted.pos = graph.pos @ tilt.T
    assert not torch.allclose(model(tilted)["energy"], reference["energy"], atol=1e-6)  # only z-symmetric


def test_one_forward_over_frames_times_graphs():
    backbone = CoordinateMLP().double()
    graph = two_molecules()
    FrameAveraged(backbone, frames="all", group="E3")(graph)
    FrameAveraged(backbone, frames="all", group="SE2")(graph)
    FrameAveraged(backbone, frames="stochastic")(graph)
    FrameAveraged(backbone, frames="det")(graph)
    assert backbone.calls == [8 * 2, 2 * 2, 2, 2]


def test_stacked_graph_matches_a_loop_over_frames():
    backbone = CoordinateMLP().double()
    graph = two_molecules()
    averaged = FrameAveraged(backbone, frames="all")(graph)
    frames, centroid = zoo.geometry.pca_frames(graph.pos, graph.batch)
    energies = []
    for k in range(8):
        canonical = graph.clone()
        rotation = frames[:, k][graph.batch]  # [N, 3, 3]
        canonical.pos = torch.einsum("nij,nj->ni", rotation, graph.pos - centroid[graph.batch])
        energies.append(backbone(canonical)["energy"])
    assert torch.allclose(averaged["energy"], torch.stack(energies).mean(0), atol=1e-12)


def test_det_frame_is_the_first_frame():
    backbone = CoordinateMLP().double()
    graph = two_molecules()
    det = frame_average(backbone, graph, frames="det")
    frames, centroid = zoo.geometry.pca_frames(graph.pos, graph.batch)
    canonical = graph.clone()
    canonical.pos = torch.einsum("nij,nj->ni", frames[:, 0][graph.batch], graph.pos - centroid[graph.batch])
    assert torch.allclose(det["energy"], backbone(canonical)["energy"], atol=1e-12)


@pytest.mark.parametrize("group", ["E3", "SE3"])
def test_stochastic_frames_are_equivariant_in_expectation(group):
    """One random frame per copy of a graph: over many copies the mean approaches the exact all-frames
    average, for the structure and for a rotated and reflected copy of it (z-test at 5 standard errors)."""
    backbone = CoordinateMLP().double()
    exact = FrameAveraged(backbone, frames="all", group=group)
    stochastic = FrameAveraged(backbone, frames="stochastic", group=group)
    molecule = molecule_graph(7, seed=3)
    q = random_orthogonal(torch.Generator().manual_seed(5), proper=group == "SE3")
    moved = molecule.clone()
    moved.pos = molecule.pos @ q.T + 2.0
    copies = 2000
    target = exact(molecule)
    generator = torch.Generator().manual_seed(11)
    for graph, rotate in ((molecule, torch.eye(3, dtype=torch.float64)), (moved, q)):
        samples = stochastic(batch_graphs([graph] * copies), generator=generator)
        energy = samples["energy"]  # [copies]
        forces = (samples["forces"].view(copies, -1, 3) @ rotate).mean(0)  # back to the unrotated axes
        error = (energy.mean() - target["energy"]).abs().item()
        standard_error = energy.std().item() / math.sqrt(copies)
        assert energy.std() > 1e-3  # single draws are not invariant
        assert error < 5 * standard_error, f"{group}: |mean - exact| = {error:.2e}, s.e. {standard_error:.2e}"
        force_se = samples["forces"].view(copies, -1, 3).std(0).max().item() / math.sqrt(copies)
        assert (forces - target["forces"]).abs().max().item() < 5 * force_se
        print(f"{group} stochastic: |E mean - exact| = {error:.2e} (standard error {standard_error:.2e})")


def test_stochastic_generator_is_reproducible():
    model = FrameAveraged(CoordinateMLP().double(), frames="stochastic")
    graph = batch_graphs([molecule_graph(6, seed=s) for s in range(6)])
    first = model(graph, generator=torch.Generator().manual_seed(3))["energy"]
    again = model(graph, generator=torch.Generator().manual_seed(3))["energy"]
    assert torch.equal(first, again)


def test_degenerate_geometry_warns_and_stays_finite():
    square = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)
    graph = AtomsGraph.build(square, torch.tensor([6, 6, 6, 6]))
    model = FrameAveraged(CoordinateMLP().double(), frames="all")
    with pytest.warns(DegenerateFramesWarning):
        out = model(graph)
    assert all(torch.isfinite(value).all() for value in out.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFramesWarning)
        with pytest.raises(DegenerateFramesWarning):
            model(graph)
        model(molecule_graph(6))  # a generic structure does not warn


def test_single_atom_is_degenerate_but_works():
    graph = AtomsGraph.build(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([8]))
    with pytest.warns(DegenerateFramesWarning):
        out = FrameAveraged(CoordinateMLP().double())(graph)
    assert out["energy"].shape == (1,) and out["forces"].shape == (1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="group"):
        FrameAveraged(CoordinateMLP(), group="3D")
    with pytest.raises(ValueError, match="frames"):
        FrameAveraged(CoordinateMLP(), frames="random")

    class Named(torch.nn.Module):
        def forward(self, graph):
            return {"node_features": graph.pos}

    with pytest.raises(ValueError, match="node_features"):
        FrameAveraged(Named()).double()(molecule_graph(5))
    out = FrameAveraged(Named(), output_types={"node_features": "vector"}).double()(molecule_graph(5))
    assert out["node_features"].shape == (5, 3)


def test_forward_backward():
    model = FrameAveraged(CoordinateMLP(), frames="all").double()
    graph = two_molecules()
    graph.pos.requires_grad_(True)
    out = model(graph)
    (out["energy"].sum() + out["forces"].square().sum()).backward()
    assert graph.pos.grad is not None and torch.isfinite(graph.pos.grad).all()
    assert all(param.grad is not None for param in model.parameters())
