"""Helpers shared by the golden-parity tests: read a fixture, slice it, compare with the reference outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from zoo.graph import AtomsGraph

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_golden(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of a golden ``.safetensors`` file and the ``config`` stored in its ``golden`` metadata."""
    with safe_open(str(path), "pt") as handle:
        config = json.loads(handle.metadata()["golden"])["config"]
    return load_file(str(path)), config


def section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.``, with the prefix removed."""
    return {key[len(prefix) + 1 :]: value for key, value in tensors.items() if key.startswith(prefix + ".")}


def assert_parity(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """``max |actual - expected| <= tolerance * max(1, max |expected|)``."""
    assert actual.shape == expected.shape
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tolerance * scale


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``."""
    assert actual.shape == expected.shape
    return ((actual.detach() - expected).abs().max() / expected.abs().max()).item()


def golden_graph(tensors: dict[str, torch.Tensor], structure: str) -> AtomsGraph:
    """A fixture's structure with the reference code's edges, in its order."""
    return AtomsGraph.build(
        tensors[f"{structure}.pos"],
        tensors[f"{structure}.z"],
        cell=tensors[f"{structure}.cell"],
        pbc=tensors[f"{structure}.pbc"],
        edge_index=tensors[f"{structure}.edge_index"],
        edge_shift=tensors[f"{structure}.edge_shift"],
    )
