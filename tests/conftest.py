"""Shared fixtures: a tiny registered potential, a card directory, the loopback Hub and an isolated cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
import torch

from zoo import registry
from zoo.graph import edge_vectors, node_graph_index, num_graphs
from zoo.registry import register_model
from zoo.testing import LoopbackHub


class PairPotential(torch.nn.Module):
    """Test-only potential: E = sum_i e(z_i) + 1/2 sum_(i,j) phi(|r_ij|), forces by autograd."""

    def __init__(self, num_basis: int = 8, cutoff: float = 5.0, hidden: int = 16) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("centres", torch.linspace(0.0, cutoff, num_basis), persistent=False)
        self.element_energy = torch.nn.Embedding(119, 1)
        self.pair = torch.nn.Sequential(torch.nn.Linear(num_basis, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1))
        self.metadata = {"cutoff": cutoff, "units": {"energy": "eV", "forces": "eV/A"}}

    def forward(self, graph):
        pos = graph.pos.requires_grad_(True) if not graph.pos.requires_grad else graph.pos
        _, dist = edge_vectors(graph)
        envelope = 0.5 * (torch.cos(torch.pi * dist / self.cutoff) + 1.0) * (dist < self.cutoff)
        rbf = torch.exp(-((dist[:, None] - self.centres) ** 2))
        pair = 0.5 * self.pair(rbf).squeeze(-1) * envelope
        atom = self.element_energy(graph.z).squeeze(-1)
        target = graph.edge_index[1]
        atom = atom.index_add(0, target, pair)
        energy = torch.zeros(num_graphs(graph), dtype=pos.dtype, device=pos.device).index_add(
            0, node_graph_index(graph), atom
        )
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        return {"energy": energy, "forces": -grad}


register_model("test-pair-potential", task="potential")(PairPotential)


@pytest.fixture
def hub(monkeypatch):
    """A running loopback Hub; HF_ENDPOINT points at it for the duration of the test."""
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty, isolated Hugging Face + zoo cache; HF_HUB_OFFLINE unset."""
    root = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ZOO_CACHE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return root


@pytest.fixture
def cards_dir(tmp_path, monkeypatch):
    """An extra card directory registered for this test only."""
    directory = tmp_path / "cards"
    directory.mkdir()
    monkeypatch.setenv("ZOO_CARDS_PATH", str(directory))
    registry._load_cards_from.cache_clear()
    yield directory
    registry._load_cards_from.cache_clear()
