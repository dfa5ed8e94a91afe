"""Conservative forces and stress agree with finite differences of the energy."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.graph import GraphError, radius_graph
from zoo.nn.conservative import conservative_outputs
from zoo.testing import bulk_graph, molecule_graph


@pytest.fixture
def potential():
    torch.manual_seed(0)
    return zoo.create_model("egnn-potential", hidden_nf=16, n_layers=2, cutoff=4.0).double().eval()


def strained_energy(model, graph, strain: torch.Tensor) -> float:
    deformation = torch.eye(3, dtype=torch.float64) + strain
    moved = graph.clone()
    moved.pos = graph.pos @ deformation
    moved.cell = graph.cell @ deformation
    return model(radius_graph(moved, 4.0))["energy"].item()


def test_stress_equals_finite_strain_differences(potential):
    graph = bulk_graph(cutoff=4.0)
    out = potential(graph, compute_stress=True)
    volume = torch.linalg.det(graph.cell[0]).abs().item()
    step = 1e-5
    numeric = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            delta = torch.zeros(3, 3, dtype=torch.float64)
            delta[a, b] = delta[b, a] = step / 2 if a != b else step
            plus, minus = strained_energy(potential, graph, delta), strained_energy(potential, graph, -delta)
            numeric[a, b] = (plus - minus) / (2 * step) / volume
    assert torch.allclose(out["stress"][0], numeric, atol=1e-8, rtol=1e-6)
    assert torch.allclose(out["stress"][0], out["stress"][0].T, atol=1e-12)


def test_forces_equal_finite_differences(potential):
    graph = bulk_graph(cutoff=4.0)
    forces = potential(graph)["forces"]
    step = 1e-5
    for atom, axis in [(0, 0), (1, 2)]:
        moved = [graph.clone(), graph.clone()]
        moved[0].pos = graph.pos.clone()
        moved[1].pos = graph.pos.clone()
        moved[0].pos[atom, axis] += step
        moved[1].pos[atom, axis] -= step
        energies = [potential(radius_graph(m, 4.0))["energy"].item() for m in moved]
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[atom, axis].item(), abs=1e-8)


def test_stress_needs_a_periodic_cell(potential):
    with pytest.raises(GraphError, match="periodic in all three directions"):
        conservative_outputs(potential.atom_energies, molecule_graph(cutoff=4.0), stress=True)


def test_training_mode_keeps_derivatives_differentiable(potential):
    potential.train()
    out = potential(bulk_graph(cutoff=4.0), compute_stress=True)
    (out["forces"].square().sum() + out["stress"].square().sum()).backward()
    assert potential.node_dec[0].weight.grad is not None  # the output bias shifts E only: no force gradient
