"""Exponential moving average of a model's weights.

After every optimiser step :math:`\\bar\\theta \\leftarrow d\\,\\bar\\theta + (1 - d)\\,\\theta` with the effective
decay :math:`d = \\min(d_0, (1 + t) / (10 + t))` (so the average follows the weights closely early on);
buffers are copied. Evaluation and the saved model use the averaged copy.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> ema = EMA(model, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = model.weight.fill_(1.0)
    >>> ema.update(model, step=100)
    >>> ema.module.weight.requires_grad
    False
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``model`` whose floating weights track ``model``'s as an exponential moving average."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average towards ``model``'s current weights (``step``: optimiser steps taken)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for average, current in zip(self.module.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.module.buffers(), model.buffers(), strict=True):
            average.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
