"""Training and fine-tuning: one trainer for every model family (``zoo train`` / ``zoo finetune``).

* :mod:`zoo.train.config` — the typed YAML configuration (unknown keys are errors; ``key=value`` overrides);
* :mod:`zoo.train.data` — structure files -> validated graphs (every problem reported at once), batch order;
* :mod:`zoo.train.trainer` — the loop: losses, accumulation, autocast, clipping, EMA, DDP, checkpoints;
* :mod:`zoo.train.finetune` — freezing, re-initialisation, per-element energy-reference refit;
* :mod:`zoo.train.state` — training-state checkpoints (safetensors + JSON, atomic, no pickle);
* :mod:`zoo.train.run` — a whole run as the command line does it, ending in a zoo checkpoint directory.

Example:
    >>> from zoo.train import load_config
    >>> load_config(None, ["train.epochs=3"]).train.epochs
    3
"""

from zoo.train.config import ConfigError, TrainConfig, load_config
from zoo.train.data import DataError
from zoo.train.run import RunResult, run_training
from zoo.train.state import StateError, load_state, save_state
from zoo.train.trainer import FitResult, Trainer

__all__ = [
    "ConfigError",
    "DataError",
    "FitResult",
    "RunResult",
    "StateError",
    "TrainConfig",
    "Trainer",
    "load_config",
    "load_state",
    "run_training",
    "save_state",
]
