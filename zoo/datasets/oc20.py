"""OC20/OC22 legacy LMDB files: pickled PyG ``Data`` objects as written by fairchem's ``AtomsToGraphs``.

Each record is ``pickle.dumps(data, protocol=-1)`` of a ``torch_geometric.data.Data`` under the ASCII key
``str(i)``; an optional record ``length`` holds the count. S2EF records carry ``pos [N, 3]``, ``cell [1, 3, 3]``,
``atomic_numbers [N]`` (float), ``natoms``, ``tags [N]`` (0 subsurface, 1 surface, 2 adsorbate),
``fixed [N]`` (float 0/1), ``sid``, ``fid``, ``y`` (energy, eV) and ``force [N, 3]`` (eV/Å); IS2RE records
carry ``pos_relaxed [N, 3]``, ``y_init`` and ``y_relaxed`` instead of ``y``/``force``. Precomputed edges
(``edge_index``, ``cell_offsets``, ``distances``) are dropped: zoo builds its own with
:class:`~zoo.datasets.transforms.RadiusGraph`.

Records are never opened with plain :func:`pickle.load`: :func:`safe_loads` resolves only an allow-list of
globals (PyG ``Data``/storage classes become inert records, tensors are rebuilt with
``torch.load(weights_only=True)``, numpy arrays), so a tampered file cannot run code.
"""

from __future__ import annotations

import _codecs
import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.datasets.ase_db import open_lmdb
from zoo.datasets.base import FrameError, StructureDataset, Transform, check_graph
from zoo.graph import AtomsGraph, GraphError

__all__ = ["OC20LmdbDataset", "UnsafePickleError", "oc20_record_to_graph", "safe_loads"]

PathLike = str | os.PathLike[str]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that refers to a global outside the allow-list of :func:`safe_loads`."""


class _Record:
    """Inert stand-in for PyG ``Data`` and its storage classes: keeps the pickled state, runs nothing."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataRecord(_Record):
    """Stand-in for ``torch_geometric.data.Data``."""


class _StorageRecord(_Record):
    """Stand-in for ``torch_geometric.data.storage.GlobalStorage``."""


def _load_storage_bytes(blob: bytes) -> Any:
    """Replacement of ``torch.storage._load_from_bytes`` that refuses anything but tensor data."""
    return torch.load(io.BytesIO(blob), weights_only=True)


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """Replacement of ``copyreg._reconstructor`` (pickle protocols 0 and 1), for allow-listed classes only."""
    if not (isinstance(cls, type) and issubclass(cls, _Record)) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r} is not allowed")
    return cls.__new__(cls)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Replacement of ``_codecs.encode``, which protocol 2 uses for bytes; strings to bytes only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return _codecs.encode(text, encoding)


try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

_NUMPY_GLOBALS = {
    (module, name): getattr(_multiarray, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_geometric.data.data", "Data"): _DataRecord,
    ("torch_geometric.data", "Data"): _DataRecord,
    ("torch_geometric.data.storage", "GlobalStorage"): _StorageRecord,
    ("torch_geometric.data.data", "DataEdgeAttr"): _Record,
    ("torch_geometric.data.data", "DataTensorAttr"): _Record,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **_NUMPY_GLOBALS,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refusing to unpickle the global {module}.{name}: not in zoo's allow-list for OC20 records "
                "(PyG Data, tensors, numpy arrays); the file is not an OC20 LMDB or has been tampered with"
            )
        return allowed


def safe_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` resolving only allow-listed globals; PyG ``Data`` objects come back as inert records
    (turn them into a field dict with :func:`record_fields`).

    Raises:
        UnsafePickleError: the pickle refers to any other global (``os.system``, ``builtins.eval``, ...).
        pickle.UnpicklingError: a corrupt pickle.
    """
    return _SafeUnpickler(io.BytesIO(blob)).load()


def record_fields(record: Any) -> dict[str, Any]:
    """The fields of an unpickled PyG ``Data`` (PyG 2 objects keep them in ``_store``, PyG 1 in ``__dict__``)."""
    if not isinstance(record, _DataRecord) or not isinstance(record.state, dict):
        raise GraphError(f"the record is a {type(record).__name__}, not a pickled torch_geometric Data object")
    state = record.state
    store = state.get("_store")
    if isinstance(store, _StorageRecord) and isinstance(store.state, dict):
        mapping = store.state.get("_mapping", {})
    else:
        mapping = state
    return {key: value for key, value in mapping.items() if value is not None and not key.startswith("_")}


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise GraphError(f"field {name} is a {type(value).__name__}, not a number or array") from error


def oc20_record_to_graph(fields: dict[str, Any], *, dtype: torch.dtype | None = None) -> AtomsGraph:
    """An OC20/OC22 record (its field dict) as an :class:`~zoo.graph.AtomsGraph`.

    ``atomic_numbers`` -> ``z``, ``force`` -> ``forces``, ``y`` (S2EF) or ``y_relaxed`` (IS2RE) -> ``energy``,
    ``fixed`` -> bool, ``pbc`` all True (OC20 slabs are periodic in 3D; the vacuum is along the third vector);
    kept as they are: ``tags``, ``sid``, ``fid`` (``[1]`` long), ``y_init``, ``y_relaxed`` (``[1]``),
    ``pos_relaxed [N, 3]``. Precomputed edges are dropped.

    Raises:
        GraphError: a missing ``pos``/``atomic_numbers``, shapes that do not match, NaN or inf.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    for name in ("pos", "atomic_numbers"):
        if name not in fields:
            raise GraphError(f"missing field {name!r} (present: {sorted(fields)})")
    pos = _tensor(fields["pos"], "pos").to(dtype)
    numbers = _tensor(fields["atomic_numbers"], "atomic_numbers")
    if numbers.is_floating_point():
        numbers = numbers.round()
    extra: dict[str, Any] = {}
    if "tags" in fields:
        extra["tags"] = _tensor(fields["tags"], "tags").long()
    if "fixed" in fields:
        extra["fixed"] = _tensor(fields["fixed"], "fixed") != 0
    energy = fields.get("y", fields.get("y_relaxed"))
    if energy is not None:
        extra["energy"] = _tensor(energy, "y").to(torch.float64).reshape(-1)
    if "force" in fields:
        extra["forces"] = _tensor(fields["force"], "force").to(torch.float64)
    for name in ("sid", "fid"):
        if name in fields:
            extra[name] = _tensor(fields[name], name).long().reshape(1)
    for name in ("y_init", "y_relaxed"):
        if name in fields:
            extra[name] = _tensor(fields[name], name).to(dtype).reshape(1)
    if "pos_relaxed" in fields:
        pos_relaxed = _tensor(fields["pos_relaxed"], "pos_relaxed").to(dtype)
        if pos_relaxed.shape != pos.shape:
            raise GraphError(f"pos_relaxed has shape {list(pos_relaxed.shape)}, pos has {list(pos.shape)}")
        extra["pos_relaxed"] = pos_relaxed
    cell = _tensor(fields["cell"], "cell").to(dtype) if "cell" in fields else None
    graph = AtomsGraph.build(pos, numbers.long(), cell=cell, pbc=cell is not None, **extra)
    natoms = fields.get("natoms")
    if natoms is not None and int(_tensor(natoms, "natoms").reshape(-1)[0]) != pos.shape[0]:
        raise GraphError(f"natoms = {int(_tensor(natoms, 'natoms').reshape(-1)[0])} but pos has {pos.shape[0]} atoms")
    check_graph(graph)
    return graph


class _PickleLmdb:
    """Records of one legacy LMDB file by position (the LMDB handle is the process-wide one of ``open_lmdb``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open_lmdb(path).begin() as txn:
                length = txn.get(b"length")
                if length is not None:
                    count = safe_loads(length)
                    if not isinstance(count, int):
                        raise FrameError(str(path), f"the 'length' record is a {type(count).__name__}, not an int")
                    self.keys = [str(index).encode("ascii") for index in range(count)]
                else:
                    keys = list(txn.cursor().iternext(values=False))
                    if not all(key.isdigit() for key in keys):
                        raise FrameError(str(path), "keys are not record numbers: not an OC20 LMDB file")
                    self.keys = sorted(keys, key=int)
        except pickle.UnpicklingError as error:
            raise FrameError(str(path), f"the 'length' record cannot be read ({error})") from error

    def fields(self, position: int) -> dict[str, Any]:
        with open_lmdb(self.path).begin() as txn:
            blob = txn.get(self.keys[position])
        if blob is None:
            raise GraphError(f"record {self.keys[position].decode()} is missing")
        try:
            return record_fields(safe_loads(blob))
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as error:
            raise GraphError(f"record {self.keys[position].decode()} cannot be unpickled ({error})") from error


class OC20LmdbDataset(StructureDataset):
    """OC20/OC22 legacy LMDB data (S2EF, IS2RE): one ``.lmdb`` file or a directory of them, in sorted order.

    Args:
        path: an ``.lmdb`` file or a directory holding ``*.lmdb`` files.
        transform: applied to each graph.
        dtype: float dtype of positions and labels.

    Raises:
        FrameError: a missing or unreadable file. Items raise :class:`~zoo.datasets.FrameError` with
            ``where`` = ``"file:record"`` for a record that cannot be used.
    """

    def __init__(self, path: PathLike, *, transform: Transform | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(transform)
        path = Path(path)
        files = sorted(path.glob("*.lmdb")) if path.is_dir() else [path]
        if not files:
            raise FrameError(str(path), "no *.lmdb files in this directory")
        self.dtype = dtype
        self._files = [_PickleLmdb(file) for file in files]
        self._offsets = np.cumsum([0] + [len(file.keys) for file in self._files])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[_PickleLmdb, int]:
        file = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self._files[file], index - int(self._offsets[file])

    def where(self, index: int) -> str:
        file, position = self._locate(index)
        return f"{file.path}:{file.keys[position].decode()}"

    def fields(self, index: int) -> dict[str, Any]:
        """The raw fields of record ``index`` (tensors and numbers, after safe unpickling)."""
        file, position = self._locate(index)
        return file.fields(position)

    def get(self, index: int) -> AtomsGraph:
        return oc20_record_to_graph(self.fields(index), dtype=self.dtype)
