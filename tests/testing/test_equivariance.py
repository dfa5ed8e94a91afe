"""The shared equivariance harness fails non-equivariant models and passes equivariant ones."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.testing import assert_equivariant, bulk_graph, molecule_graph, point_cloud_graph, slab_graph
from zoo.testing.equivariance import random_orthogonal


class CoordinateMLP(torch.nn.Module):
    """Not equivariant at all: an MLP on raw coordinates."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, graph):
        return {"energy": self.net(graph.pos).sum().reshape(1)}


class CentroidForces(torch.nn.Module):
    """Equivariant: forces toward the centroid, scaled by an invariant of the distance."""

    def forward(self, graph):
        centred = graph.pos - graph.pos.mean(0)
        scale = torch.tanh(centred.norm(dim=1, keepdim=True))
        return {
            "energy": (scale**2).sum().reshape(1),
            "forces": -scale * centred,
            "pos": graph.pos + 0.1 * centred,
        }


class HandedTorque(torch.nn.Module):
    """A pseudovector: the sum of cross products of consecutive centred positions (permutation-sensitive)."""

    def forward(self, graph):
        centred = graph.pos - graph.pos.mean(0)
        return {"torque": torch.linalg.cross(centred, centred.roll(1, 0)).sum(0, keepdim=True)}


def test_catches_non_equivariant_model():
    with pytest.raises(AssertionError, match="not equivariant") as info:
        assert_equivariant(CoordinateMLP(), molecule_graph())
    assert "rotation" in str(info.value) and "NO" in str(info.value)


def test_catches_reflection_only_failure():
    """A pseudovector declared as a vector passes rotations but must fail reflections."""
    report = assert_equivariant(
        HandedTorque(),
        molecule_graph(),
        output_types={"torque": "vector"},
        permutation=False,
        raise_on_failure=False,
    )
    status = {row.transform: row.passed for row in report.rows}
    assert status["rotation"] and status["translation"]
    assert not status["reflection"]
    assert_equivariant(HandedTorque(), molecule_graph(), output_types={"torque": "pseudovector"}, permutation=False)


def test_parity_switch_for_se3_models():
    """A pseudovector declared as a vector passes once reflections are switched off (an SE(3)-only check)."""
    report = assert_equivariant(
        HandedTorque(), molecule_graph(), output_types={"torque": "vector"}, permutation=False, parity=False
    )
    assert "reflection" not in {row.transform for row in report.rows}


def test_catches_permutation_failure():
    report = assert_equivariant(
        HandedTorque(), molecule_graph(), output_types={"torque": "pseudovector"}, raise_on_failure=False
    )
    assert not {row.transform: row.passed for row in report.rows}["permutation"]


def test_passes_equivariant_model_and_reports_table():
    report = assert_equivariant(CentroidForces(), molecule_graph())
    assert report.passed and report.max_error < 1e-12
    assert {row.output for row in report.rows} == {"energy", "forces", "pos"}
    assert {row.transform for row in report.rows} >= {"rotation", "reflection", "translation", "permutation"}
    assert "max |error|" in str(report)


@pytest.mark.parametrize("factory", [molecule_graph, slab_graph, bulk_graph])
def test_registered_pair_potential_is_equivariant(factory):
    """A model using the neighbour list with periodic images passes on molecules, slabs and bulk."""
    torch.manual_seed(0)
    model = zoo.create_model("test-pair-potential")
    assert_equivariant(model, factory())


def test_point_cloud_and_unknown_output():
    with pytest.raises(ValueError, match="output_types"):
        assert_equivariant(HandedTorque(), point_cloud_graph())


@pytest.mark.parametrize("proper", [True, False])
def test_random_orthogonal(proper):
    q = random_orthogonal(torch.Generator().manual_seed(1), proper=proper)
    assert torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.det(q).item() == pytest.approx(1.0 if proper else -1.0)
