"""Optimisers and learning-rate schedules (linear warm-up, then cosine, plateau or constant).

The schedule is a small object with a plain-data ``state_dict`` so that it checkpoints without pickle. The
learning rate at optimiser step :math:`t` is

.. math:: \\eta_t = \\eta_0 \\cdot w_t \\cdot s_t, \\qquad w_t = \\min\\!\\left(1, \\frac{t + 1}{T_w + 1}\\right)

with :math:`s_t` the cosine factor
:math:`\\eta_{min}/\\eta_0 + (1 - \\eta_{min}/\\eta_0) \\tfrac12 (1 + \\cos(\\pi t / T))`, the plateau factor
(multiplied by ``factor`` after ``patience`` epochs without improvement, floored at ``min_lr``) or 1.

Example:
    >>> import torch
    >>> from zoo.train.config import OptimConfig, ScheduleConfig
    >>> params = [torch.nn.Parameter(torch.zeros(1))]
    >>> optimizer = build_optimizer(params, OptimConfig(lr=1.0))
    >>> schedule = LRSchedule(optimizer, ScheduleConfig(name="cosine", warmup_steps=1), total_steps=10)
    >>> [round(schedule.lr_at(t), 3) for t in (0, 1, 10)]
    [0.5, 1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from zoo.train.config import OptimConfig, ScheduleConfig

__all__ = ["LRSchedule", "build_optimizer"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` (the trainable ones) with the configured hyper-parameters."""
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters: every parameter is frozen (check finetune.freeze)")
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.name]
    return kind(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


class LRSchedule:
    """Sets the learning rate of every parameter group before each optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int) -> None:
        self.optimizer = optimizer
        self.config = config
        self.total_steps = max(1, total_steps)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.plateau_scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0

    def _factor(self, step: int) -> float:
        config = self.config
        warmup = min(1.0, (step + 1) / (config.warmup_steps + 1))
        if config.name == "cosine":
            progress = min(1.0, max(0, step - config.warmup_steps) / max(1, self.total_steps - config.warmup_steps))
            floor = config.min_lr / self.base_lrs[0]
            return warmup * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
        if config.name == "plateau":
            return warmup * max(self.plateau_scale, config.min_lr / self.base_lrs[0])
        return warmup

    def lr_at(self, step: int) -> float:
        """Learning rate of the first parameter group at optimiser step ``step``."""
        return self.base_lrs[0] * self._factor(step)

    def apply(self, step: int) -> float:
        """Set the learning rates for optimiser step ``step``; returns the first group's."""
        factor = self._factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor

    def end_epoch(self, metric: float | None) -> None:
        """Plateau bookkeeping with the epoch's validation metric (lower is better); other schedules ignore it."""
        if self.config.name != "plateau" or metric is None:
            return
        if self.best is None or metric < self.best:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.config.patience:
            self.plateau_scale *= self.config.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (JSON-able)."""
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
