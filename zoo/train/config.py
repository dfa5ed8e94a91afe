"""The typed training configuration: YAML validated by pydantic, overridden from the command line.

A configuration is plain data. Unknown keys are errors (a misspelt ``learning_rate`` must not be silently
ignored), YAML is read with ``yaml.safe_load`` (no Python objects, no code), and every error names the full
key path. Command-line overrides are ``dotted.key=value`` pairs whose value is parsed as YAML.

Example:
    >>> from zoo.train.config import TrainConfig, apply_overrides
    >>> raw = apply_overrides({"model": {"architecture": "test-pair-potential"}}, ["optim.lr=3e-4"])
    >>> config = TrainConfig.model_validate(raw)
    >>> config.optim.lr, config.optim.name, config.schedule.name
    (0.0003, 'adamw', 'cosine')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DatasetSource",
    "EMAConfig",
    "FinetuneConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TargetLoss",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "validate_config",
]


class ConfigError(ValueError):
    """An invalid training configuration; the message lists every bad key with its full path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """The architecture to train from scratch (``zoo train``): ``zoo.create_model(architecture, **args)``."""

    architecture: str
    args: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict, description="merged over the model's metadata")
    backend: str | None = Field(
        None,
        description="run the message passing through zoo.kernels with this backend (auto, torch, compile, "
        "triton, torch_scatter) where the model has a fused path; a runtime setting, not saved with the model",
    )


class DatasetSource(_Section):
    """A data set that yields graphs itself (edges included), instead of structure files.

    ``name`` picks one of :data:`zoo.train.data.GRAPH_DATASETS` (e.g. ``nbody``, the N-body trajectories of
    :class:`zoo.datasets.NBodyDataset`), opened as ``Dataset(root, split, **args)`` for each split.
    """

    name: str
    root: str
    args: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str | None = Field("valid", description="null: no validation set")


class DataConfig(_Section):
    """Structure files (anything ``ase.io.read`` reads, e.g. extxyz) and how their labels are named, or a
    :class:`DatasetSource` that yields graphs."""

    dataset: DatasetSource | None = None
    train: list[str] = Field(default_factory=list)
    val: list[str] = Field(default_factory=list)
    batch_size: int = Field(8, ge=1, description="global batch size (all processes together)")
    val_batch_size: int | None = Field(None, ge=1, description="default: batch_size")
    cutoff: float | None = Field(None, gt=0, description="neighbour-list radius in Å; default: the model's")
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"


class TargetLoss(_Section):
    """One supervised output: ``weight * loss(output[name], label)`` averaged over graphs or atoms."""

    weight: float = Field(1.0, ge=0)
    kind: Literal["mse", "mae", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0)
    per_atom: bool = Field(False, description="divide a per-graph target by the number of atoms (energies)")
    label: str | None = Field(None, description="field of the batch holding the label; default: the name")


def _potential_targets() -> dict[str, TargetLoss]:
    return {"energy": TargetLoss(weight=1.0, per_atom=True), "forces": TargetLoss(weight=10.0)}


class LossConfig(_Section):
    """What the model is trained on.

    ``kind: targets`` (potentials, property and dynamics models) compares named outputs with labels;
    ``kind: model`` calls the model's own ``model.loss(batch)`` (diffusion models) and minimises the mean of the
    per-graph losses it returns, or its ``"loss"`` entry if it returns a dict.
    """

    kind: Literal["targets", "model"] = "targets"
    targets: dict[str, TargetLoss] = Field(default_factory=_potential_targets)

    @model_validator(mode="after")
    def _something_to_learn(self) -> LossConfig:
        if self.kind == "targets" and not any(t.weight > 0 for t in self.targets.values()):
            raise ValueError("loss.targets needs at least one target with weight > 0")
        return self


class OptimConfig(_Section):
    """Optimiser, gradient clipping and accumulation."""

    name: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(10.0, gt=0, description="max global gradient norm; null disables")
    accumulate: int = Field(1, ge=1, description="batches per optimiser step")


class ScheduleConfig(_Section):
    """Learning-rate schedule after a linear warm-up: cosine to ``min_lr``, plateau decay, or constant."""

    name: Literal["cosine", "plateau", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    factor: float = Field(0.5, gt=0, lt=1, description="plateau: multiply the lr by this")
    patience: int = Field(5, ge=0, description="plateau: epochs without improvement before decaying")


class EMAConfig(_Section):
    """Exponential moving average of the weights; evaluation and the saved model use it."""

    enabled: bool = True
    decay: float = Field(0.99, gt=0, lt=1)


class CheckpointConfig(_Section):
    """Training-state checkpoints (``<output>/checkpoints/{last,best}.safetensors``)."""

    every_steps: int | None = Field(None, ge=1, description="also save 'last' every this many steps")


class RunConfig(_Section):
    """Length, precision, device, determinism and early stopping of a run."""

    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda (a process per GPU under torchrun)")
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast; fp16 needs CUDA")
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms (warn only)")
    monitor: str = Field("loss", description="validation metric that selects 'best' and drives early stopping")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without improvement; null: off")
    val_every_epochs: int = Field(
        1, ge=1, description="validate (and pick 'best') every this many epochs and at the end; patience counts these"
    )
    log_every_steps: int = Field(10, ge=1)


class FinetuneConfig(_Section):
    """Fine-tuning from a pretrained model (``zoo finetune``)."""

    freeze: list[str] = Field(default_factory=list, description="glob patterns on parameter names to freeze")
    reinitialize: list[str] = Field(
        default_factory=list, description="glob patterns on module names to re-initialise (default: keep all)"
    )
    energy_reference: Literal["auto", "refit", "keep"] = Field(
        "auto", description="auto: refit per-element energies when that lowers the training energy error"
    )
    energy_reference_parameter: str | None = Field(
        None, description="parameter holding per-element energies [Z, 1] or [Z]; default: found by name"
    )


class TrainConfig(_Section):
    """A whole training or fine-tuning configuration (the YAML file of ``zoo train`` / ``zoo finetune``)."""

    model: ModelConfig | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    train: RunConfig = Field(default_factory=RunConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON data (what checkpoints and cards record)."""
        return self.model_dump(mode="json")


# YAML 1.1 reads "1e-4" (no dot) as a string; on the command line it is meant as a number.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``raw`` with ``dotted.key=value`` overrides applied; values are parsed as YAML.

    Example:
        >>> apply_overrides({"optim": {"lr": 1e-3}}, ["optim.lr=1e-4", "finetune.freeze=[embed*]"])
        {'optim': {'lr': 0.0001}, 'finetune': {'freeze': ['embed*']}}
    """
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        try:
            value = float(text) if _FLOAT.match(text.strip()) else yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {exc}") from exc
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def validate_config(raw: dict[str, Any], origin: str = "<config>") -> TrainConfig:
    """Validate plain data as a :class:`TrainConfig`; every problem is reported with its key path."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = "unknown key (check the spelling)" if error["type"] == "extra_forbidden" else error["msg"]
            lines.append(f"  {where}: {message}")
        raise ConfigError(f"{origin}: invalid training configuration:\n" + "\n".join(lines)) from None


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML configuration (``None``: all defaults), apply ``key=value`` overrides and validate it.

    Raises:
        ConfigError: unreadable YAML, a top level that is not a mapping, unknown keys, invalid values.
    """
    raw: Any = {}
    origin = "<defaults>"
    if path is not None:
        origin = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: the configuration must be a YAML mapping of sections")
    return validate_config(apply_overrides(raw, list(overrides or [])), origin)
