"""Converters from upstream checkpoint formats to zoo models.

A converter is registered under the name a model card's ``source.converter`` uses. It takes the path of
the downloaded upstream file (plus the card's ``converter_args``) and returns a model built by
:func:`zoo.create_model` with the converted weights loaded (``strict=True``) and its metadata set; the Hub
layer then caches it as a zoo checkpoint. The state-dict remapping inside each converter is a pure function
``(state_dict, model) -> state_dict`` that passes already-converted weights through. Upstream pickles are
opened with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["Converter", "get_converter", "list_converters", "register_converter"]

Converter = Callable[..., torch.nn.Module]
_CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    """Register ``fn(path: Path, **converter_args) -> nn.Module`` under ``name``."""

    def decorator(fn: Converter) -> Converter:
        if name in _CONVERTERS and _CONVERTERS[name] is not fn:
            raise ValueError(f"converter {name!r} is already registered")
        _CONVERTERS[name] = fn
        return fn

    return decorator


def list_converters() -> list[str]:
    """Names of the registered converters."""
    return sorted(_CONVERTERS)


def get_converter(name: str) -> Callable[..., torch.nn.Module]:
    """The converter registered under ``name``; unknown names raise with the closest matches.

    A converter named ``x`` that is not registered yet is looked for in the module ``zoo.converters.x``,
    imported on first use (so importing zoo does not import every upstream format).
    """
    module = f"{__name__}.{name}"
    if name not in _CONVERTERS and name.isidentifier() and importlib.util.find_spec(module) is not None:
        importlib.import_module(module)
    if name not in _CONVERTERS:
        close = difflib.get_close_matches(name, list(_CONVERTERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no converter named {name!r}.{hint} Known: {', '.join(list_converters()) or 'none'}")
    return _CONVERTERS[name]


def convert(name: str, path: str | Path, **converter_args: Any) -> torch.nn.Module:
    """Run converter ``name`` on an upstream file."""
    return get_converter(name)(Path(path), **converter_args)
