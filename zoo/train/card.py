"""The model card (``README.md``) of a trained or fine-tuned checkpoint: base model, data, metrics."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zoo.hub import sha256_file

__all__ = ["DataFile", "training_card"]


@dataclass(frozen=True)
class DataFile:
    """A structure file used in training: its path, split, number of structures and sha256."""

    path: str
    split: str
    structures: int
    sha256: str
    label: str | None = None

    @property
    def name(self) -> str:
        """What the card shows: the label, or the file name."""
        return self.label or Path(self.path).name

    @classmethod
    def describe(cls, path: str, split: str, structures: int) -> DataFile:
        return cls(path, split, structures, sha256_file(path))

    @classmethod
    def describe_files(
        cls, label: str, root: str, files: Sequence[str | os.PathLike[str]], split: str, items: int
    ) -> DataFile:
        """A data set in ``root`` read from several files: the sha256 of their sha256 hex digests, one per line."""
        digest = hashlib.sha256("\n".join(sha256_file(f) for f in files).encode()).hexdigest()
        return cls(root, split, items, digest, label)


def _row(values: dict[str, float], key: str) -> str:
    return f"{values[key]:.6g}" if key in values else "-"


def training_card(
    *,
    architecture: str,
    task: str | None,
    license: str,
    base_model: str | None,
    data: Sequence[DataFile],
    step0: dict[str, float],
    best: dict[str, float],
    config: dict[str, Any],
    command: str,
) -> str:
    """Markdown with Hugging Face front matter (``base_model``, ``model-index`` with the validation metrics)."""
    front: dict[str, Any] = {
        "library_name": "zoo",
        "license": license,
        "tags": ["zoo", architecture, *([task] if task else []), "fine-tuned" if base_model else "trained"],
    }
    if base_model:
        front["base_model"] = base_model
    validation = [item for item in data if item.split == "val"]
    metrics = {key[len("val_") :]: value for key, value in best.items() if key.startswith("val_")}
    if metrics:
        front["model-index"] = [
            {
                "name": architecture,
                "results": [
                    {
                        "task": {"type": task or "regression"},
                        "dataset": {"name": ", ".join(item.name for item in validation), "type": "custom"},
                        "metrics": [
                            {"type": key, "name": f"validation {key}", "value": value} for key, value in metrics.items()
                        ],
                    }
                ],
            }
        ]
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    origin = f"fine-tuned from `{base_model}`" if base_model else "trained from scratch"
    lines = [
        f"---\n{header}---",
        f"# {architecture} ({origin})",
        "",
        "A `zoo` checkpoint. Load it with `zoo.load('<this directory or hf-hub:org/name>')`.",
        "",
        f"Made with `{command}`.",
        "",
        "## Data",
        "",
        "| split | file | structures | sha256 |",
        "|---|---|---|---|",
        *(f"| {item.split} | {item.name} | {item.structures} | `{item.sha256[:16]}` |" for item in data),
        "",
        "## Validation metrics",
        "",
        "Measured by zoo on the validation files above, with the weights saved here (EMA if enabled).",
        "",
        "| metric | step 0 | saved model |",
        "|---|---|---|",
        *(f"| {key} | {_row(step0, 'val_' + key)} | {_row(best, 'val_' + key)} |" for key in metrics),
        "",
        "## Training configuration",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
