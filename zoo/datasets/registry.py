"""Named datasets: where their raw files come from and how to open them, ``zoo.datasets.load("qm9", root=...)``.

Each entry lists its remote files (URL, optional md5, and for archives the members that go to ``root/raw``).
:func:`load` opens the dataset if its raw files are in ``root/raw``; otherwise, with ``download=True`` and a
network, it fetches them (atomic, resumable, HTML error pages refused; md5 checked where pinned, otherwise recorded
at the first download and checked on later ones) and extracts
the archives. Offline (``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, or no network) it raises a
:class:`~zoo.datasets.MissingRawFilesError` that says which file to place where and where to get it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.datasets.md17 import MDTrajectoryDataset
from zoo.datasets.point_clouds import ModelNet40
from zoo.datasets.processed import MissingRawFilesError
from zoo.datasets.qm9 import QM9, QM9_URL, UNCHARACTERIZED_URL

__all__ = ["DatasetEntry", "RemoteFile", "get_dataset_entry", "list_datasets", "load", "register_dataset"]

PathLike = str | os.PathLike[str]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: ``url`` saved as ``name`` under ``root/raw``; for an archive, ``members`` maps each
    member path inside it to the raw file it becomes. ``md5`` is checked when given."""

    url: str
    name: str
    md5: str | None = None
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset: the raw files it needs, where they come from, and how to open it from ``root``."""

    name: str
    description: str
    raw_files: tuple[str, ...]
    remote: tuple[RemoteFile, ...]
    opener: Callable[..., Any]
    citation: str = ""

    def source_of(self, raw_file: str) -> str:
        """Human-readable origin of one raw file."""
        for remote in self.remote:
            if remote.name == raw_file:
                return remote.url
            for member, target in remote.members.items():
                if target == raw_file:
                    return f"{remote.url} (member {member})"
        return "unknown"


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Add ``entry`` to the registry (its name must be new)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"dataset {entry.name!r} is registered already")
    _REGISTRY[entry.name] = entry
    return entry


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_REGISTRY)


def get_dataset_entry(name: str) -> DatasetEntry:
    """The entry of ``name``.

    Raises:
        KeyError: unknown name, with the closest registered names.
    """
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_datasets())}"
        raise KeyError(f"unknown dataset {name!r}{hint}")
    return _REGISTRY[name]


def _offline() -> bool:
    return any(os.environ.get(variable, "") not in ("", "0") for variable in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_error(entry: DatasetEntry, raw_dir: Path, missing: list[str], reason: str) -> MissingRawFilesError:
    lines = "\n".join(f"  {raw_dir / name}  <- {entry.source_of(name)}" for name in missing)
    return MissingRawFilesError(
        f"{entry.name}: raw files are missing and cannot be downloaded ({reason}). Place them as follows, then "
        f"call load again:\n{lines}"
    )


def _fetch(entry: DatasetEntry, raw_dir: Path, missing: list[str]) -> None:
    from zoo.hub import DownloadError, download_url

    for remote in entry.remote:
        targets = set(remote.members.values()) if remote.members else {remote.name}
        if not targets & set(missing):
            continue
        archive = raw_dir / remote.name
        try:
            download_url(remote.url, archive)
        except DownloadError as error:
            raise _missing_error(entry, raw_dir, missing, str(error)) from error
        _check_md5(entry, raw_dir, missing, remote, archive)
        for member, target in remote.members.items():
            _extract(archive, member, raw_dir / target)
        if remote.members:
            archive.unlink()


MD5_RECORD = "md5.json"


def _check_md5(entry: DatasetEntry, raw_dir: Path, missing: list[str], remote: RemoteFile, archive: Path) -> None:
    """Check a download against its pinned md5, or else against the md5 recorded at its first download.

    Upstream servers publish no checksums for most of these files, so an unpinned file is trusted on first use:
    its md5 is recorded in ``raw/md5.json`` (and logged), and a later download of the same URL that differs is
    refused, so a changed or corrupted upstream file is noticed instead of silently mixed into a data set.
    """
    record_path = raw_dir / MD5_RECORD
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    digest = _md5(archive)
    expected = remote.md5 or records.get(remote.url)
    if expected is not None and digest != expected:
        archive.unlink()
        origin = "its pinned md5" if remote.md5 else f"the md5 recorded at its first download (in {record_path})"
        raise _missing_error(
            entry,
            raw_dir,
            missing,
            f"{remote.url} has md5 {digest} but {origin} is {expected}; if upstream changed the file on purpose, "
            "delete that record and load again",
        )
    if remote.md5 is None and remote.url not in records:
        records[remote.url] = digest
        staging = record_path.with_suffix(".tmp")
        staging.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        os.replace(staging, record_path)
        logger.warning(
            "%s: %s is not pinned upstream; md5 %s recorded in %s", entry.name, remote.url, digest, record_path
        )


def _extract(archive: Path, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        return
    with tarfile.open(archive) as bundle:
        source = bundle.extractfile(member)
        if source is None:
            raise MissingRawFilesError(f"{archive} has no file {member}")
        with source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)


def load(name: str, root: PathLike, *, download: bool = True, **kwargs: Any) -> Any:
    """Open the registered dataset ``name`` from ``root`` (raw files under ``root/raw``), downloading what is
    missing if allowed and possible. ``kwargs`` go to the dataset (``transform``, ``pre_transform``, ``dtype``...).

    Raises:
        KeyError: unknown name.
        MissingRawFilesError: raw files missing and not downloadable; the message lists each file with its
            destination and source.

    Example (offline, with the raw files in place)::

        qm9 = zoo.datasets.load("qm9", root="data/qm9", download=False)
    """
    entry = get_dataset_entry(name)
    root = Path(root)
    raw_dir = root / "raw"
    missing = [raw for raw in entry.raw_files if not (raw_dir / raw).is_file()]
    if missing:
        if not download:
            raise _missing_error(entry, raw_dir, missing, "download=False")
        if _offline():
            raise _missing_error(entry, raw_dir, missing, "offline: ZOO_OFFLINE or HF_HUB_OFFLINE is set")
        raw_dir.mkdir(parents=True, exist_ok=True)
        _fetch(entry, raw_dir, missing)
    return entry.opener(root, **kwargs)


# --------------------------------------------------------------------------------------------------- entries
register_dataset(
    DatasetEntry(
        name="qm9",
        description="QM9: 130,831 small organic molecules (C, H, N, O, F), 19 targets, PyG raw layout",
        raw_files=QM9.raw_files,
        remote=(
            RemoteFile(QM9_URL, "qm9.zip", members={"gdb9.sdf": "gdb9.sdf", "gdb9.sdf.csv": "gdb9.sdf.csv"}),
            RemoteFile(UNCHARACTERIZED_URL, "uncharacterized.txt"),
        ),
        opener=QM9,
        citation="Ramakrishnan et al., Sci. Data 1, 140022 (2014)",
    )
)

_GDML_URL = "http://quantum-machine.org/gdml/data/npz"
_MD17 = {
    "aspirin": "md17_aspirin.npz",
    "benzene": "md17_benzene2017.npz",
    "ethanol": "md17_ethanol.npz",
    "malonaldehyde": "md17_malonaldehyde.npz",
    "naphthalene": "md17_naphthalene.npz",
    "salicylic": "md17_salicylic.npz",
    "toluene": "md17_toluene.npz",
    "uracil": "md17_uracil.npz",
}
_RMD17_URL = "https://archive.materialscloud.org/record/file?filename=rmd17.tar.bz2&record_id=466"
_RMD17 = "aspirin azobenzene benzene ethanol malonaldehyde naphthalene paracetamol salicylic toluene uracil".split()
_MD22_URL = "http://quantum-machine.org/gdml/repo/datasets"
_MD22 = ("Ac-Ala3-NHMe", "DHA", "stachyose", "AT-AT", "AT-AT-CG-CG", "buckyball-catcher", "double-walled_nanotube")


def _trajectory_opener(file_name: str) -> Callable[..., MDTrajectoryDataset]:
    def opener(root: PathLike, **kwargs: Any) -> MDTrajectoryDataset:
        return MDTrajectoryDataset(Path(root) / "raw" / file_name, **kwargs)

    return opener


for _molecule, _file in _MD17.items():
    register_dataset(
        DatasetEntry(
            name=f"md17-{_molecule}",
            description=f"MD17 {_molecule}: DFT molecular dynamics (sGDML npz), energies in kcal/mol converted to eV",
            raw_files=(_file,),
            remote=(RemoteFile(f"{_GDML_URL}/{_file}", _file),),
            opener=_trajectory_opener(_file),
            citation="Chmiela et al., Sci. Adv. 3, e1603015 (2017)",
        )
    )
for _molecule in _RMD17:
    _file = f"rmd17_{_molecule}.npz"
    register_dataset(
        DatasetEntry(
            name=f"rmd17-{_molecule}",
            description=f"revised MD17 {_molecule}: 100k recomputed frames (rmd17.tar.bz2)",
            raw_files=(_file,),
            remote=(RemoteFile(_RMD17_URL, "rmd17.tar.bz2", members={f"rmd17/npz_data/{_file}": _file}),),
            opener=_trajectory_opener(_file),
            citation="Christensen and von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020)",
        )
    )
_MODELNET40_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
_MODELNET40_FILES = (
    *(f"ply_data_train{i}.h5" for i in range(5)),
    *(f"ply_data_test{i}.h5" for i in range(2)),
    "shape_names.txt",
)
register_dataset(
    DatasetEntry(
        name="modelnet40",
        description="ModelNet40 point clouds: 12,311 CAD shapes in 40 classes, 2,048 points each (PointNet HDF5)",
        raw_files=tuple(f"modelnet40_ply_hdf5_2048/{name}" for name in _MODELNET40_FILES),
        remote=(
            RemoteFile(
                _MODELNET40_URL,
                "modelnet40_ply_hdf5_2048.zip",
                members={f"modelnet40_ply_hdf5_2048/{n}": f"modelnet40_ply_hdf5_2048/{n}" for n in _MODELNET40_FILES},
            ),
        ),
        opener=lambda root, **kwargs: ModelNet40(Path(root) / "raw", **kwargs),
        citation="Wu et al., CVPR 2015 (ModelNet); Qi et al., CVPR 2017 (PointNet HDF5 release)",
    )
)

for _molecule in _MD22:
    _file = f"md22_{_molecule}.npz"
    register_dataset(
        DatasetEntry(
            name=f"md22-{_molecule.lower()}",
            description=f"MD22 {_molecule}: large molecules and complexes, sGDML npz",
            raw_files=(_file,),
            remote=(RemoteFile(f"{_MD22_URL}/{_file}", _file),),
            opener=_trajectory_opener(_file),
            citation="Chmiela et al., Sci. Adv. 9, eadf0873 (2023)",
        )
    )
