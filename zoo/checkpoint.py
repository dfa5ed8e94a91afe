"""The zoo checkpoint format: a directory (= a zoo Hub repo) with exactly three files.

* ``config.json`` — ``{"zoo_version", "architecture", "model_args", "task", "metadata"}``: everything needed
  to rebuild the module (``zoo.create_model(architecture, **model_args)``) and to use it physically
  (cutoff, units, energy references, ... in ``metadata``).
* ``model.safetensors`` — the weights; loaded with ``strict=True``. No pickle is ever executed.
* ``README.md`` — the model card with Hugging Face front matter (``library_name: zoo``).

Example:
    >>> import tempfile, torch, zoo
    >>> from zoo.registry import register_model, _ARCHITECTURES
    >>> _ = register_model("doc-mlp")(lambda width=3: torch.nn.Linear(width, 1))
    >>> model = zoo.create_model("doc-mlp", width=3)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = zoo.save_pretrained(model, tmp + "/ckpt")
    ...     again = zoo.from_pretrained(tmp + "/ckpt")
    >>> torch.equal(again.weight, model.weight)
    True
    >>> del _ARCHITECTURES["doc-mlp"]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from zoo._version import __version__
from zoo.registry import Card, create_model, get_architecture

__all__ = ["CheckpointError", "from_pretrained", "push_to_hub", "read_config", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


class CheckpointError(ValueError):
    """A checkpoint directory that is incomplete, corrupt or does not match its architecture."""


def _json_ready(value: Any, where: str) -> Any:
    """Check that ``value`` is plain JSON data (configs are data, never code)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} must be plain JSON data (numbers, strings, lists, dicts): {exc}") from exc
    return value


def default_card_text(architecture: str, task: str | None, license: str, metadata: dict[str, Any]) -> str:
    """A minimal Hugging Face model card for a checkpoint that has no card of its own."""
    front = {
        "library_name": "zoo",
        "license": license,
        "tags": ["zoo", architecture, *([task] if task else [])],
    }
    front.update({k: metadata[k] for k in ("base_model", "datasets") if k in metadata})
    header = yaml.safe_dump(front, sort_keys=False)
    return (
        f"---\n{header}---\n# {architecture}\n\nA `zoo` checkpoint. Load it with\n\n"
        f"```python\nimport zoo\nmodel = zoo.load('path/or/hf-hub:org/name')\n```\n"
    )


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    card: Card | str | None = None,
    license: str = "other",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a zoo checkpoint directory, atomically (a reader never sees half a checkpoint).

    Args:
        model: a module built by :func:`zoo.create_model` or loaded by :func:`zoo.load` (it carries
            ``zoo_config``).
        directory: target directory; an existing checkpoint there is replaced as a whole.
        card: the model card (a :class:`~zoo.registry.Card` or its markdown text) written as ``README.md``;
            by default the card the model was loaded with, else a minimal one.
        license: licence for a generated card.
        metadata: merged over ``model.metadata`` into ``config.json``.

    Returns:
        The checkpoint directory.
    """
    config = getattr(model, "zoo_config", None)
    if not config:
        raise CheckpointError(
            f"{type(model).__name__} has no zoo_config: build it with zoo.create_model(architecture, **args) "
            "or zoo.load(...) so its constructor arguments can be saved"
        )
    arch = get_architecture(config["architecture"])
    meta = {**getattr(model, "metadata", {}), **(metadata or {})}
    task = meta.get("task", arch.task)
    payload = {
        "zoo_version": __version__,
        "architecture": config["architecture"],
        "model_args": _json_ready(config["model_args"], "model_args"),
        "task": task,
        "metadata": _json_ready(meta, "metadata"),
    }
    if card is None:
        card = getattr(model, "card", None)
    if isinstance(card, Card):
        card_text = card.text()
    elif isinstance(card, str):
        card_text = card
    else:
        card_text = default_card_text(config["architecture"], task, license, meta)

    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / CONFIG_NAME).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        save_model(model, str(staging / WEIGHTS_NAME), metadata={"format": "pt", "zoo_version": __version__})
        (staging / CARD_NAME).write_text(card_text, encoding="utf-8")
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished ``source`` directory to ``target``, replacing an existing one as a whole."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        source.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        source.rename(target)


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found: a zoo checkpoint directory holds {', '.join(FILES)}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt, download it again"
        ) from exc
    missing = [k for k in ("architecture", "model_args") if k not in config]
    if missing or not isinstance(config.get("model_args"), dict):
        raise CheckpointError(f"{path} lacks {missing or ['model_args (a mapping)']}")
    return config


_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_float_dtype(weights: Path) -> torch.dtype | None:
    """The floating dtype of a safetensors file's tensors, if they share one (else ``None``)."""
    with safe_open(str(weights), "pt") as handle:
        kinds = {handle.get_slice(key).get_dtype() for key in handle.keys()}
    floats = {_SAFETENSORS_FLOATS[k] for k in kinds if k in _SAFETENSORS_FLOATS}
    return floats.pop() if len(floats) == 1 else None


def from_pretrained(
    directory: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    card: Card | None = None,
) -> torch.nn.Module:
    """Build the model of a zoo checkpoint directory and load its weights with ``strict=True``.

    The module is returned in ``eval()`` mode with ``zoo_config``, ``metadata`` (from ``config.json``) and
    ``card`` attached, in the floating dtype the weights were saved in unless ``dtype`` says otherwise.
    """
    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found: a zoo checkpoint directory holds {', '.join(FILES)}")
    model = create_model(config["architecture"], **config["model_args"])
    try:
        stored = stored_float_dtype(weights)
        if stored is not None:
            model = model.to(dtype=stored)
        load_model(model, str(weights), strict=True)
    except SafetensorError as exc:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}): it is truncated or corrupt; "
            "delete it and download again"
        ) from exc
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights} does not match architecture {config['architecture']!r} with the saved model_args: {exc}"
        ) from exc
    model.metadata = dict(config.get("metadata") or {})
    if config.get("task"):
        model.metadata.setdefault("task", config["task"])
    model.card = card
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device=device)
    return model.eval()


def push_to_hub(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload zoo checkpoint",
    endpoint: str | None = None,
) -> str:
    """Upload a zoo checkpoint directory to the Hugging Face Hub; returns the commit sha.

    The directory is checked first — it must load with :func:`from_pretrained` (``strict=True``) and carry a
    ``README.md`` card with ``library_name: zoo`` — so a broken checkpoint is never published. Only the three
    checkpoint files are uploaded. The repo is created if missing.
    """
    from huggingface_hub import HfApi

    from zoo.registry import CardError, split_front_matter

    directory = Path(directory)
    from_pretrained(directory)
    card = directory / CARD_NAME
    if not card.is_file():
        raise CheckpointError(f"{card} not found: write the checkpoint with zoo.save_pretrained (it adds the card)")
    try:
        front, _ = split_front_matter(card.read_text(encoding="utf-8"), str(card))
    except CardError as exc:
        raise CheckpointError(str(exc)) from exc
    if front.get("library_name") != "zoo":
        raise CheckpointError(f"{card}: the front matter needs 'library_name: zoo' so the Hub lists it as a zoo model")
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(directory), repo_id=repo_id, allow_patterns=list(FILES), commit_message=commit_message
    )
    return commit.oid
