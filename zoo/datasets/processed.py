"""Datasets processed once from raw files, PyG style: ``root/raw`` -> ``root/processed``, with a pre-transform guard.

:class:`ProcessedDataset` converts the raw files into graphs once (``process_raw``), applies ``pre_transform``
to each, and saves them to ``root/processed/<name>.pt`` (tensors only, loaded with
``torch.load(weights_only=True)``) beside ``<name>.json`` recording the ``repr`` of the pre-transform and the
raw files' sizes. When either differs on the next load -- a different pre-transform, changed raw files, a new
processing version -- the processed file is recomputed (PyG only warns).
"""

from __future__ import annotations

import json
import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch

from zoo.datasets.base import StructureDataset, Transform
from zoo.graph import AtomsGraph, batch_graphs

__all__ = ["MissingRawFilesError", "ProcessedDataset"]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]
_CAT_DIM = AtomsGraph()  # answers which dimension a field is concatenated along (PyG rules)


class MissingRawFilesError(FileNotFoundError):
    """Raw files of a dataset are not where they must be; the message says which files go where and where to get
    them."""


class ProcessedDataset(StructureDataset):
    """Base of datasets built from raw files under ``root/raw`` and cached under ``root/processed``.

    Subclasses set ``name``, ``raw_files`` (names under ``root/raw``), ``version`` (bump it when processing
    changes) and implement :meth:`process_raw`; :meth:`missing_message` may explain where the files come from.

    Args:
        root: dataset directory (``root/raw`` holds the raw files).
        transform: applied to each item when read.
        pre_transform: applied once to each graph before saving; a change of its ``repr`` triggers reprocessing.
    """

    name: str = "dataset"
    raw_files: tuple[str, ...] = ()
    version: int = 1

    def __init__(
        self, root: PathLike, *, transform: Transform | None = None, pre_transform: Transform | None = None
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        self.pre_transform = pre_transform
        missing = [name for name in self.raw_files if not (self.raw_dir / name).is_file()]
        if missing and not self.processed_path.is_file():
            raise MissingRawFilesError(self.missing_message(missing))
        stamp = self._stamp(missing)
        if not self._is_current(stamp):
            if missing:
                raise MissingRawFilesError(self.missing_message(missing))
            logger.info("processing %s raw files in %s", self.name, self.raw_dir)
            self._save(self.process_raw(), stamp)
        self._load()

    @property
    def raw_dir(self) -> Path:
        """``root/raw``."""
        return self.root / "raw"

    @property
    def processed_path(self) -> Path:
        """``root/processed/<name>.pt``."""
        return self.root / "processed" / f"{self.name}.pt"

    def missing_message(self, missing: list[str]) -> str:
        """The error text for raw files that are missing."""
        return f"{self.name}: missing raw files {missing} in {self.raw_dir}; place them there."

    @abstractmethod
    def process_raw(self) -> list[AtomsGraph]:
        """Read ``root/raw`` into graphs (before ``pre_transform``)."""

    def _stamp(self, missing: list[str]) -> dict[str, Any]:
        sizes = {name: (self.raw_dir / name).stat().st_size for name in self.raw_files if name not in missing}
        return {"version": self.version, "pre_transform": repr(self.pre_transform), "raw_sizes": sizes}

    def _is_current(self, stamp: dict[str, Any]) -> bool:
        stamp_path = self.processed_path.with_suffix(".json")
        if not self.processed_path.is_file() or not stamp_path.is_file():
            return False
        stored = json.loads(stamp_path.read_text())
        if stored.get("version") != stamp["version"] or stored.get("pre_transform") != stamp["pre_transform"]:
            logger.warning(
                "%s: processed with pre_transform %s (version %s), now %s (version %s): processing again",
                self.name,
                stored.get("pre_transform"),
                stored.get("version"),
                stamp["pre_transform"],
                stamp["version"],
            )
            return False
        # Raw files that are gone do not invalidate the processed data; changed ones do.
        return all(stored.get("raw_sizes", {}).get(name) == size for name, size in stamp["raw_sizes"].items())

    def _save(self, graphs: list[AtomsGraph], stamp: dict[str, Any]) -> None:
        if self.pre_transform is not None:
            graphs = [self.pre_transform(graph) for graph in graphs]
        batch = batch_graphs(graphs)
        payload = {
            "fields": {key: value for key, value in batch.to_dict().items() if key not in ("batch", "ptr")},
            "slices": dict(batch._slice_dict),
            "increments": dict(batch._inc_dict),
        }
        self.processed_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.processed_path.with_suffix(".pt.part")
        torch.save(payload, partial)
        os.replace(partial, self.processed_path)
        self.processed_path.with_suffix(".json").write_text(json.dumps(stamp, indent=1))

    def _load(self) -> None:
        payload = torch.load(self.processed_path, weights_only=True)
        self._fields: dict[str, Any] = payload["fields"]
        self._slices: dict[str, torch.Tensor] = payload["slices"]
        self._increments: dict[str, Any] = payload["increments"]
        self._length = int(self._slices["pos"].numel() - 1)

    def __len__(self) -> int:
        return self._length

    def where(self, index: int) -> str:
        return f"{self.processed_path}:{index}"

    def get(self, index: int) -> AtomsGraph:
        data: dict[str, Any] = {}
        for key, value in self._fields.items():
            slices = self._slices[key]
            start, end = int(slices[index]), int(slices[index + 1])
            if isinstance(value, torch.Tensor):
                dim = _CAT_DIM.__cat_dim__(key, value) if value.dim() else 0
                item = value.narrow(dim, start, end - start)
                increment = self._increments.get(key)
                if isinstance(increment, torch.Tensor) and increment.numel() and int(increment[index]):
                    item = item - increment[index]
                data[key] = item
            else:
                data[key] = value[start] if end - start == 1 else value[start:end]
        return AtomsGraph(**data)

    def num_atoms(self) -> Any:
        return self._fields["natoms"].numpy().copy()
