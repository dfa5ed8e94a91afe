"""``zoo data inspect/convert``, open_dataset and the registry of named datasets (download and offline error)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from zoo.cli.main import main
from zoo.datasets.ase_db import AseDBDataset
from zoo.datasets.ase_files import AseReadDataset
from zoo.datasets.base import LabelKeys
from zoo.datasets.md17 import MDTrajectoryDataset
from zoo.datasets.processed import MissingRawFilesError
from zoo.datasets.registry import (
    _REGISTRY,
    MD5_RECORD,
    DatasetEntry,
    RemoteFile,
    get_dataset_entry,
    list_datasets,
    load,
    register_dataset,
)
from zoo.datasets.synthetic import random_structures
from zoo.datasets.tools import convert_to_aselmdb, inspect_dataset, open_dataset

pytest.importorskip("lmdb")


@pytest.fixture
def extxyz(tmp_path: Path) -> Path:
    path = tmp_path / "train.extxyz"
    structures = random_structures(6, seed=8)
    for atoms in structures:
        atoms.info["REF_energy"] = atoms.calc.results["energy"] + 1.0
    ase.io.write(path, structures)
    return path


def test_convert_keeps_custom_keys(tmp_path: Path, extxyz: Path) -> None:
    keys = LabelKeys(energy="REF_energy")
    source = AseReadDataset(extxyz, keys=keys, dtype=torch.float64)
    out = tmp_path / "out.aselmdb"
    assert convert_to_aselmdb(source, out) == (6, [])
    converted = open_dataset(out, keys=keys, dtype=torch.float64)
    assert isinstance(converted, AseDBDataset)
    for index in range(6):
        original, copy = source[index], converted[index]
        assert set(original.keys()) == set(copy.keys())
        for key in original.keys():
            assert torch.equal(original[key], copy[key]), key
    with pytest.raises(FileExistsError):
        convert_to_aselmdb(source, out)


def test_inspect_summary(extxyz: Path) -> None:
    summary = inspect_dataset(AseReadDataset(extxyz), cutoff=3.0)
    rows = dict(summary.rows())
    assert rows["structures"] == "6 (0 bad)"
    assert rows["periodic"] == "3 of 6"
    assert "neighbours @ 3 Å" in rows and "|forces|" in rows and "energy/atom" in rows


def test_cli_inspect_and_convert_report_bad_frames(
    tmp_path: Path, extxyz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    structures = ase.io.read(extxyz, ":")
    structures[4].calc.results["forces"][0, 0] = np.nan
    bad = tmp_path / "bad.extxyz"
    ase.io.write(bad, structures)
    assert main(["data", "inspect", str(extxyz), "--cutoff", "3"]) == 0
    assert "neighbours @ 3 Å" in capsys.readouterr().out
    assert main(["data", "inspect", str(bad)]) == 1
    assert f"bad: {bad}:4: forces contain NaN or inf at atoms [0]" in capsys.readouterr().err
    out = tmp_path / "all.aselmdb"
    assert main(["data", "convert", str(extxyz), str(bad), str(out), "--energy-key", "REF_energy"]) == 1
    captured = capsys.readouterr()
    assert f"bad: {bad}:4: forces" in captured.err
    assert "wrote 11 of 12 structures" in captured.out
    assert len(AseDBDataset(out)) == 11
    missing = tmp_path / "missing.extxyz"
    assert main(["data", "inspect", str(missing)]) == 2
    assert f"{missing}: file not found" in capsys.readouterr().err


def test_open_dataset_picks_the_format(tmp_path: Path) -> None:
    npz = tmp_path / "md17_x.npz"
    np.savez(npz, R=np.arange(24.0).reshape(2, 4, 3), z=np.array([1, 1, 1, 1]), E=np.zeros(2), F=np.zeros((2, 4, 3)))
    assert isinstance(open_dataset(npz), MDTrajectoryDataset)


# --------------------------------------------------------------------------------------------------- registry
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a directory."""
    directory = tmp_path / "served"
    directory.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", directory
    finally:
        server.shutdown()
        server.server_close()


def test_registry_download_and_offline_error(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, directory = served
    npz = tmp_path / "md17_toy.npz"
    np.savez(npz, R=np.arange(24.0).reshape(2, 4, 3), z=np.array([1, 1, 1, 1]), E=np.zeros(2), F=np.zeros((2, 4, 3)))
    with zipfile.ZipFile(directory / "toy.zip", "w") as bundle:
        bundle.write(npz, "inner/md17_toy.npz")
    md5 = hashlib.md5((directory / "toy.zip").read_bytes()).hexdigest()
    entry = DatasetEntry(
        name="toy-test",
        description="test entry",
        raw_files=("toy.npz",),
        remote=(RemoteFile(f"{url}/toy.zip", "toy.zip", md5=md5, members={"inner/md17_toy.npz": "toy.npz"}),),
        opener=lambda root, **kwargs: MDTrajectoryDataset(Path(root) / "raw" / "toy.npz", **kwargs),
    )
    monkeypatch.setitem(_REGISTRY, "toy-test", entry)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    root = tmp_path / "root"
    with pytest.raises(MissingRawFilesError) as error:
        load("toy-test", root)
    assert str(error.value) == (
        "toy-test: raw files are missing and cannot be downloaded (offline: ZOO_OFFLINE or HF_HUB_OFFLINE is set). "
        f"Place them as follows, then call load again:\n  {root / 'raw' / 'toy.npz'}  <- {url}/toy.zip (member "
        "inner/md17_toy.npz)"
    )
    monkeypatch.delenv("ZOO_OFFLINE")
    dataset = load("toy-test", root)
    assert len(dataset) == 2 and not (root / "raw" / "toy.zip").exists()
    assert len(load("toy-test", root, download=False)) == 2


def test_registry_entries() -> None:
    names = list_datasets()
    assert {"qm9", "md17-aspirin", "rmd17-aspirin", "md22-ac-ala3-nhme"} <= set(names)
    assert "qm9.zip" in get_dataset_entry("qm9").source_of("gdb9.sdf")
    with pytest.raises(KeyError, match="did you mean qm9"):
        get_dataset_entry("qm8")
    with pytest.raises(ValueError, match="registered already"):
        register_dataset(get_dataset_entry("qm9"))


def test_unpinned_download_is_recorded_and_a_changed_file_refused(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, directory = served
    np.savez(directory / "toy.npz", R=np.zeros((2, 3, 3)), z=np.ones(3, int), E=np.zeros(2), F=np.zeros((2, 3, 3)))
    entry = DatasetEntry(
        name="toy-unpinned",
        description="test entry",
        raw_files=("toy.npz",),
        remote=(RemoteFile(f"{url}/toy.npz", "toy.npz"),),
        opener=lambda root, **kwargs: MDTrajectoryDataset(Path(root) / "raw" / "toy.npz", **kwargs),
    )
    monkeypatch.setitem(_REGISTRY, "toy-unpinned", entry)
    root = tmp_path / "root"
    with caplog.at_level("WARNING", logger="zoo.datasets.registry"):
        assert len(load("toy-unpinned", root)) == 2
    first = hashlib.md5((directory / "toy.npz").read_bytes()).hexdigest()
    assert json.loads((root / "raw" / MD5_RECORD).read_text()) == {f"{url}/toy.npz": first}
    assert "not pinned upstream" in caplog.text and first in caplog.text

    (root / "raw" / "toy.npz").unlink()  # lost locally; upstream meanwhile changed the file
    np.savez(directory / "toy.npz", R=np.ones((2, 3, 3)), z=np.ones(3, int), E=np.zeros(2), F=np.zeros((2, 3, 3)))
    with pytest.raises(MissingRawFilesError, match=f"recorded at its first download \\(in .*md5.json\\) is {first}"):
        load("toy-unpinned", root)
    assert not (root / "raw" / "toy.npz").exists()  # the refused download is not left behind


def test_modelnet40_entry_downloads_the_hdf5_release(
    tmp_path: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    h5py = pytest.importorskip("h5py")
    url, directory = served
    entry = get_dataset_entry("modelnet40")
    release = tmp_path / "release"
    (release / "modelnet40_ply_hdf5_2048").mkdir(parents=True)
    rng = np.random.default_rng(0)
    counts = {"train": [3, 2, 2, 1, 2], "test": [2, 1]}
    for split, sizes in counts.items():
        for index, size in enumerate(sizes):  # the PointNet layout: data [S, 2048, 3] float32, label [S, 1] uint8
            with h5py.File(release / "modelnet40_ply_hdf5_2048" / f"ply_data_{split}{index}.h5", "w") as handle:
                handle["data"] = rng.normal(size=(size, 2048, 3)).astype(np.float32)
                handle["label"] = rng.integers(0, 40, size=(size, 1)).astype(np.uint8)
                handle["normal"] = rng.normal(size=(size, 2048, 3)).astype(np.float32)
    (release / "modelnet40_ply_hdf5_2048" / "shape_names.txt").write_text("\n".join(f"class{i}" for i in range(40)))
    archive = directory / "modelnet40_ply_hdf5_2048.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(release.rglob("*")):
            bundle.write(path, path.relative_to(release).as_posix())
    (remote,) = entry.remote
    local = dataclasses.replace(entry, remote=(dataclasses.replace(remote, url=f"{url}/{archive.name}"),))
    monkeypatch.setitem(_REGISTRY, "modelnet40", local)
    root = tmp_path / "root"
    train = load("modelnet40", root, split="train")
    test = load("modelnet40", root, split="test", download=False)
    assert (len(train), len(test)) == (10, 3)
    assert train.classes[:2] == ["class0", "class1"] and train[0].pos.shape == (2048, 3)
    assert not (root / "raw" / archive.name).exists()  # the archive is removed once its members are extracted
