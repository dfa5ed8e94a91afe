"""Training-state checkpoints: one safetensors file per checkpoint, read back without pickle.

A training state is a nested structure of dicts, lists, tuples, numbers, strings and tensors (model, EMA,
optimiser and scheduler state, RNG states as tensors, step and data position). It is split into

* the tensors, stored as safetensors under their path in the structure (``optimizer/state/0/exp_avg``), and
* the rest, stored as JSON in the safetensors header metadata, with ``{"__tensor__": path}`` where a tensor was.

Files are written to a temporary name in the same directory, flushed to disk and renamed over the target
(``os.replace``), so a run killed at any instant leaves either the previous checkpoint or the new one, never
half of one.

Example:
    >>> import tempfile, torch
    >>> state = {"step": 3, "model": {"w": torch.ones(2)}, "betas": (0.9, 0.999), "ids": {0: "a"}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_state(state, tmp + "/last.safetensors")
    ...     again = load_state(tmp + "/last.safetensors")
    >>> again["step"], again["model"]["w"].tolist(), again["betas"], again["ids"]
    (3, [1.0, 1.0], (0.9, 0.999), {0: 'a'})
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = ["StateError", "load_state", "save_state"]

_META_KEY = "zoo_train_state"
_FORMAT = "zoo-train-state/1"


class StateError(ValueError):
    """A training-state file that is missing, truncated or not a zoo training state."""


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of ``value``; its tensors go to ``tensors`` under their path."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"__dict__": {key: _flatten(item, f"{path}/{key}", tensors) for key, item in value.items()}}
        return {"__items__": [[key, _flatten(item, f"{path}/{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_flatten(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise StateError(f"training state at {path or '/'} holds a {type(value).__name__}: only tensors and plain data")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(item, tensors) for item in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {key: _unflatten(item, tensors) for key, item in value["__dict__"].items()}
        if "__items__" in value:
            return {key: _unflatten(item, tensors) for key, item in value["__items__"]}
        if "__tuple__" in value:
            return tuple(_unflatten(item, tensors) for item in value["__tuple__"])
        raise StateError(f"unexpected mapping in a training state: keys {sorted(value)}")
    return value


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` atomically to ``path`` (a ``.safetensors`` file); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    metadata = {_META_KEY: json.dumps(skeleton), "format": _FORMAT}
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target


def load_state(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (no pickle is involved)."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: no training state there")
    try:
        with safe_open(str(path), "pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as exc:
        raise StateError(f"{path}: not a readable safetensors file ({exc}); it is truncated or corrupt") from exc
    if metadata.get("format") != _FORMAT or _META_KEY not in metadata:
        raise StateError(f"{path}: not a zoo training state (format {metadata.get('format')!r})")
    return _unflatten(json.loads(metadata[_META_KEY]), tensors)
