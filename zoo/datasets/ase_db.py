"""ASE databases: SQLite (``ase.db``, ``.db``) and ASE-LMDB (fairchem's ``.aselmdb``), read and written.

ASE-LMDB is the format of fairchem's ``LMDBDatabase`` (OMat24, OMol25, OC20 ASE-DB releases): one LMDB
file (``subdir=False``); each row under the ASCII key ``str(id)`` (ids from 1) as zlib-compressed JSON of an
:class:`ase.db.row.AtomsRow`'s fields (``numbers``, ``positions``, ``cell``, ``pbc``, ``energy``, ``forces``,
``stress``, ``tags``, ``constraints`` as ``[{"name": "FixAtoms", "kwargs": {...}}]``, ``key_value_pairs``,
``data``, ...), arrays as nested lists; the reserved keys ``nextid``, ``metadata`` and ``deleted_ids`` hold
zlib-compressed JSON too. zoo reads and writes it with the ``lmdb`` package (``pip install lmdb``) and the
standard library, without fairchem or ase-db-backends.

LMDB and SQLite handles are opened lazily in each process, so a :class:`torch.utils.data.DataLoader` with
workers opens its own handle per worker.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ase
import ase.db
import numpy as np
import torch
from ase.db.core import now
from ase.db.row import AtomsRow

from zoo.datasets.base import FrameError, LabelKeys, StructureDataset, Transform, atoms_to_graph
from zoo.graph import AtomsGraph, GraphError

__all__ = ["AseDBDataset", "AseLmdbWriter", "is_aselmdb", "open_lmdb", "row_to_atoms"]

PathLike = str | os.PathLike[str]
RESERVED_KEYS = (b"nextid", b"metadata", b"deleted_ids")
_LMDB_MAP_SIZE = 1 << 40  # 1 TiB of address space; the file grows only as written


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError as error:
        raise ImportError("LMDB files need the lmdb package: pip install lmdb") from error
    return lmdb


def open_lmdb(path: PathLike, *, write: bool = False) -> Any:
    """An ``lmdb.Environment`` on the single-file LMDB ``path``: for writing, a new handle (a read handle of this
    process on the same file is closed first); for reading, the process-wide read-only handle (no lock).

    LMDB allows one handle per file and process, so readers share one, opened lazily in each process: a handle
    inherited through ``fork`` (DataLoader workers) is closed in the child -- read-only and lock-free, that
    leaves the parent's untouched -- and the file opened afresh.

    Raises:
        FrameError: the file is missing or not an LMDB file (``where`` = the file).
    """
    lmdb = _lmdb()
    key = _file_key(path)
    if write:
        _close_reader(key)
        return lmdb.open(str(path), subdir=False, map_size=_LMDB_MAP_SIZE, meminit=False, map_async=True)
    if key is None:
        raise FrameError(str(path), "file not found")
    cached = _READERS.get(key)
    if cached is not None and cached[0] == os.getpid():
        return cached[1]
    _close_reader(key)
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as error:
        raise FrameError(str(path), f"not a readable LMDB file ({error})") from error
    _READERS[key] = (os.getpid(), env)
    return env


# Read-only LMDB handles by file identity (st_dev, st_ino): (pid that opened it, environment).
_READERS: dict[tuple[int, int], tuple[int, Any]] = {}


def _file_key(path: PathLike) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _close_reader(key: tuple[int, int] | None) -> None:
    cached = _READERS.pop(key, None) if key is not None else None
    if cached is not None:
        cached[1].close()


def is_aselmdb(path: PathLike) -> bool:
    """Whether the LMDB file ``path`` holds ASE rows (zlib JSON) rather than pickles (OC20 legacy LMDB)."""
    with open_lmdb(path).begin() as txn:
        for key, value in txn.cursor():
            if key not in RESERVED_KEYS and key != b"length":
                return value[:1] == b"x"  # zlib header; pickles start with 0x80
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "todict"):
        return value.todict()
    raise TypeError(f"cannot store {type(value).__name__} in an ASE-LMDB row")


def _encode(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode())


def _decode(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def row_to_atoms(row: AtomsRow) -> ase.Atoms:
    """An ASE database row as atoms, with its ``key_value_pairs`` merged into ``atoms.info`` and its ``data``
    into ``atoms.arrays`` (per-atom arrays, first dimension = number of atoms) or ``atoms.info`` (the rest), so
    :class:`~zoo.datasets.LabelKeys` find labels stored in either."""
    atoms = row.toatoms()
    atoms.info.update(row.key_value_pairs)
    for key, value in row.data.items():
        array = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
        if array is not None and array.ndim >= 1 and array.shape[0] == len(atoms) and key not in atoms.arrays:
            atoms.arrays[key] = array
        else:
            atoms.info[key] = value
    return atoms


class AseLmdbWriter:
    """Write :class:`ase.Atoms` to an ASE-LMDB file, row by row, as fairchem's ``LMDBDatabase.write`` does.

    Use as a context manager; rows are committed every ``commit_every`` writes and on exit.

    Example:
        >>> import os, tempfile
        >>> from ase.build import molecule
        >>> path = os.path.join(tempfile.mkdtemp(), "water.aselmdb")
        >>> with AseLmdbWriter(path) as db:
        ...     db.write(molecule("H2O"), key_value_pairs={"sid": 7})
        1
        >>> len(AseDBDataset(path))
        1
    """

    def __init__(self, path: PathLike, *, commit_every: int = 1000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.commit_every = commit_every
        self._env = open_lmdb(self.path, write=True)
        self._txn = self._env.begin(write=True)
        nextid = self._txn.get(b"nextid")
        self._nextid = _decode(nextid) if nextid is not None else 1
        self._pending = 0

    def write(self, atoms: ase.Atoms, key_value_pairs: dict[str, Any] | None = None, data: dict | None = None) -> int:
        """Append one row (the atoms with their calculator results, tags, constraints, ...); returns its id."""
        row = AtomsRow(atoms)
        row.ctime = now()
        row.user = os.getenv("USER") or getpass.getuser()
        dct = {key: row[key] for key in row.__dict__ if key[0] != "_" and key not in row._keys and key != "id"}
        dct["mtime"] = now()
        if key_value_pairs:
            dct["key_value_pairs"] = key_value_pairs
        if data:
            dct["data"] = data
        if row.constraints:
            dct["constraints"] = [constraint.todict() for constraint in row.constraints]
        dct["cell"] = np.asarray(dct["cell"])
        index = self._nextid
        self._txn.put(str(index).encode("ascii"), _encode(dct))
        self._nextid += 1
        self._txn.put(b"nextid", _encode(self._nextid))
        self._pending += 1
        if self._pending >= self.commit_every:
            self._txn.commit()
            self._txn = self._env.begin(write=True)
            self._pending = 0
        return index

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Store the database's metadata dictionary (the reserved key ``metadata``)."""
        self._txn.put(b"metadata", _encode(metadata))

    def close(self) -> None:
        """Commit what is pending and close the file."""
        if self._txn is not None:
            self._txn.commit()
            self._txn = None
            self._env.close()

    def __enter__(self) -> AseLmdbWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LmdbRows:
    """Rows of an ASE-LMDB file by position (the LMDB handle is the process-wide one of :func:`open_lmdb`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open_lmdb(path).begin() as txn:
            deleted = txn.get(b"deleted_ids")
            deleted_ids = set(_decode(deleted)) if deleted is not None else set()
            keys = [key for key in txn.cursor().iternext(values=False) if key not in RESERVED_KEYS]
        ids = []
        for key in keys:
            if not key.isdigit():
                raise FrameError(str(path), f"unexpected key {key!r}: not an ASE-LMDB file (OC20 legacy LMDB?)")
            ids.append(int(key))
        self.ids = sorted(set(ids) - deleted_ids)

    def row(self, position: int) -> AtomsRow:
        row_id = self.ids[position]
        with open_lmdb(self.path).begin() as txn:
            blob = txn.get(str(row_id).encode("ascii"))
        if blob is None:
            raise GraphError(f"row id {row_id} is missing")
        try:
            dct = _decode(blob)
        except (zlib.error, ValueError) as error:
            raise GraphError(f"row id {row_id} is corrupt ({error})") from error
        dct["id"] = row_id
        return AtomsRow(dct)


class _SqliteRows:
    """Rows of an ASE SQLite database by position; the connection is opened lazily in each process."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FrameError(str(path), "file not found")
        self.path = path
        self._db: Any = None
        self._pid = -1
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                rows = connection.execute("SELECT id, natoms FROM systems ORDER BY id").fetchall()
        except sqlite3.DatabaseError as error:
            raise FrameError(str(path), f"not a readable ASE SQLite database ({error})") from error
        self.ids = [row_id for row_id, _ in rows]
        self.natoms = np.array([natoms for _, natoms in rows], dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_db": None, "_pid": -1}

    def row(self, position: int) -> AtomsRow:
        if self._db is None or self._pid != os.getpid():
            self._db = ase.db.connect(str(self.path), type="db")
            self._pid = os.getpid()
        try:
            return self._db.get(id=self.ids[position])
        except (KeyError, sqlite3.DatabaseError) as error:
            raise GraphError(f"row id {self.ids[position]} cannot be read ({error})") from error


class AseDBDataset(StructureDataset):
    """The rows of an ASE database (SQLite ``.db`` or ASE-LMDB ``.aselmdb``/``.lmdb``) as graphs.

    Rows are read when indexed, never all at once. The row's ``key_value_pairs`` and ``data`` are visible to
    the label keys (see :func:`row_to_atoms`); ``dataset.row_id(i)`` is the database id of item ``i``.

    Args:
        path: the database file. ``.db`` is SQLite; any other suffix is taken as ASE-LMDB.
        keys: label keys (see :class:`~zoo.datasets.LabelKeys`).
        transform: applied to each graph.
        dtype: float dtype of positions and labels.

    Raises:
        FrameError: the file is missing or not a database of that kind (``where`` = the file). Reading a bad row
            raises a :class:`~zoo.datasets.FrameError` with ``where`` = ``"file:index"`` (0-based position).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        keys: LabelKeys | None = None,
        transform: Transform | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(transform)
        self.path = Path(path)
        self.keys = keys or LabelKeys()
        self.dtype = dtype
        self._rows: _SqliteRows | _LmdbRows = (
            _SqliteRows(self.path) if self.path.suffix == ".db" else _LmdbRows(self.path)
        )

    def __len__(self) -> int:
        return len(self._rows.ids)

    def where(self, index: int) -> str:
        return f"{self.path}:{index}"

    def row_id(self, index: int) -> int:
        """Database id of item ``index``."""
        return self._rows.ids[index]

    def atoms(self, index: int) -> ase.Atoms:
        """Row ``index`` as :class:`ase.Atoms` (see :func:`row_to_atoms`)."""
        return row_to_atoms(self._rows.row(index))

    def get(self, index: int) -> AtomsGraph:
        return atoms_to_graph(self.atoms(index), self.keys, dtype=self.dtype)

    def num_atoms(self) -> np.ndarray:
        if isinstance(self._rows, _SqliteRows):
            return self._rows.natoms.copy()
        return np.array([len(self._rows.row(index).numbers) for index in range(len(self))], dtype=np.int64)

    def iter_atoms(self) -> Iterator[tuple[str, ase.Atoms]]:
        """``(where, atoms)`` of every row, in order."""
        for index in range(len(self)):
            yield self.where(index), self.atoms(index)
