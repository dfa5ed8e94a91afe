"""Losses and metrics over named targets, normalised so that any split of a global batch gives the same result.

A target compares ``output[name]`` with the batch field ``label`` (default: ``name``): energies ``[B]`` (divided by
the number of atoms with ``per_atom``), forces ``[N, 3]``, stress ``[B, 3, 3]``, or any property. Each term is a
*sum* over the elements of a micro-batch divided by the element count of the whole global batch (all micro-batches
of an accumulated step, all processes), so the gradient of one optimiser step does not depend on how the batch
was split across processes or accumulation steps:

.. math:: L = \\sum_t w_t \\frac{1}{|S_t|} \\sum_{k \\in S_t} \\ell(\\hat y_{t,k} - y_{t,k})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from zoo.graph import num_graphs
from zoo.train.config import TargetLoss

__all__ = ["MetricSums", "label_counts", "target_errors", "term_sums"]


def _label(batch: Any, name: str, target: TargetLoss) -> Tensor:
    key = target.label or name
    if key not in batch:
        raise KeyError(f"the batch has no label {key!r} for the loss target {name!r}; check loss.targets")
    return batch[key]


def label_counts(batch: Any, targets: Mapping[str, TargetLoss]) -> dict[str, int]:
    """Number of label elements of each weighted target in ``batch`` (the loss denominators)."""
    return {name: _label(batch, name, t).numel() for name, t in targets.items() if t.weight > 0}


def target_errors(output: Mapping[str, Tensor], batch: Any, name: str, target: TargetLoss) -> Tensor:
    """``prediction - label`` for one target, per atom for ``per_atom`` targets, in the prediction's dtype."""
    if name not in output:
        raise KeyError(f"the model's output has no {name!r} (it has {sorted(output)}); check loss.targets")
    prediction = output[name]
    label = _label(batch, name, target).to(prediction.dtype)
    if prediction.shape != label.shape:
        raise ValueError(f"output {name!r} has shape {list(prediction.shape)} but its label {list(label.shape)}")
    error = prediction - label
    if target.per_atom:
        natoms = batch.natoms.to(error.dtype)
        if error.shape[0] != num_graphs(batch):
            raise ValueError(f"per_atom target {name!r} must be per graph ([B, ...]), got {list(error.shape)}")
        error = error / natoms.reshape(-1, *([1] * (error.dim() - 1)))
    return error


def _elementwise(error: Tensor, target: TargetLoss) -> Tensor:
    if target.kind == "mse":
        return error.square()
    if target.kind == "mae":
        return error.abs()
    return functional.huber_loss(error, torch.zeros_like(error), reduction="none", delta=target.huber_delta)


def term_sums(output: Mapping[str, Tensor], batch: Any, targets: Mapping[str, TargetLoss]) -> dict[str, Tensor]:
    """Sum of the elementwise loss of each weighted target over ``batch``."""
    return {
        name: _elementwise(target_errors(output, batch, name, target), target).sum()
        for name, target in targets.items()
        if target.weight > 0
    }


class MetricSums:
    """Running sums (loss, absolute and squared error, count) per target, reducible across processes."""

    def __init__(self, targets: Mapping[str, TargetLoss]) -> None:
        self.targets = dict(targets)
        self.names = list(self.targets)
        self.sums = torch.zeros(len(self.names), 4, dtype=torch.float64)

    @torch.no_grad()
    def add(self, output: Mapping[str, Tensor], batch: Any) -> None:
        """Add one batch's errors, in float64 (targets missing from the output or the batch are skipped)."""
        output = {key: value.detach().double() for key, value in output.items() if isinstance(value, Tensor)}
        for row, name in enumerate(self.names):
            target = self.targets[name]
            if name not in output or (target.label or name) not in batch:
                continue
            error = target_errors(output, batch, name, target)
            self.sums[row, 0] += _elementwise(error, target).sum().cpu()
            self.sums[row, 1] += error.abs().sum().cpu()
            self.sums[row, 2] += error.square().sum().cpu()
            self.sums[row, 3] += error.numel()

    def reduce(self) -> None:
        """Sum over processes (no-op without ``torch.distributed``)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.sums)

    def compute(self) -> dict[str, float]:
        """``loss`` (weighted sum of mean losses) and ``<target>_mae`` / ``<target>_rmse`` per target."""
        metrics: dict[str, float] = {}
        loss = 0.0
        for row, name in enumerate(self.names):
            total, absolute, square, count = self.sums[row].tolist()
            if count == 0:
                continue
            metrics[f"{name}_mae"] = absolute / count
            metrics[f"{name}_rmse"] = (square / count) ** 0.5
            loss += self.targets[name].weight * total / count
        return {"loss": loss, **metrics}
