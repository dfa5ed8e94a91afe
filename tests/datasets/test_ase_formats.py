"""ASE-readable files, ASE SQLite and ASE-LMDB: write -> read -> identical values; bad frames named by file:frame."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from zoo.datasets.ase_db import AseDBDataset, AseLmdbWriter
from zoo.datasets.ase_files import AseReadDataset, StreamingAseDataset
from zoo.datasets.base import DatasetError, FrameError, LabelKeys, check_dataset
from zoo.datasets.synthetic import random_structures

lmdb = pytest.importorskip("lmdb")


def rounded(structures: list[ase.Atoms]) -> list[ase.Atoms]:
    """Values rounded to 8 decimals, which extxyz writes exactly (``%16.8f``), so round trips are exact."""
    for atoms in structures:
        atoms.positions = atoms.positions.round(8)
        atoms.cell = atoms.cell.array.round(8)
        atoms.arrays["charges"] = atoms.arrays["charges"].round(8)
        results = {key: np.round(value, 8) for key, value in atoms.calc.results.items()}
        atoms.calc = SinglePointCalculator(atoms, **results)
    return structures


@pytest.fixture(scope="module")
def structures() -> list[ase.Atoms]:
    return rounded(random_structures(12, seed=1))


def assert_same(graph, atoms: ase.Atoms, *, charges: bool = True) -> None:
    """Every field of ``graph`` equals the source ``atoms`` exactly (float64)."""
    np.testing.assert_array_equal(graph.pos.numpy(), atoms.positions)
    np.testing.assert_array_equal(graph.z.numpy(), atoms.numbers)
    np.testing.assert_array_equal(graph.cell[0].numpy(), atoms.cell.array)
    np.testing.assert_array_equal(graph.pbc[0].numpy(), atoms.pbc)
    np.testing.assert_array_equal(graph.tags.numpy(), atoms.get_tags())
    fixed = np.zeros(len(atoms), bool)
    for constraint in atoms.constraints:
        fixed[constraint.get_indices()] = True
    np.testing.assert_array_equal(graph.fixed.numpy(), fixed)
    results = atoms.calc.results
    assert float(graph.energy[0]) == results["energy"]
    np.testing.assert_array_equal(graph.forces.numpy(), results["forces"])
    if "stress" in results:
        np.testing.assert_array_equal(graph.stress[0].numpy(), voigt_6_to_full_3x3_stress(results["stress"]))
    else:
        assert "stress" not in graph
    if charges:
        np.testing.assert_array_equal(graph.charges.numpy(), atoms.arrays["charges"])


@pytest.mark.parametrize("suffix", [".extxyz", ".traj"])
def test_ase_file_round_trip(tmp_path: Path, structures: list[ase.Atoms], suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    ase.io.write(path, structures)
    dataset = AseReadDataset(path, dtype=torch.float64)
    assert len(dataset) == len(structures)
    assert dataset.num_atoms().tolist() == [len(atoms) for atoms in structures]
    for index, atoms in enumerate(structures):
        assert_same(dataset[index], atoms, charges=suffix == ".extxyz")
        assert dataset.where(index) == f"{path}:{index}"


def test_configurable_keys(tmp_path: Path) -> None:
    atoms = rounded(random_structures(2, seed=3))
    for structure in atoms:
        results = structure.calc.results
        structure.calc = None
        structure.info["REF_energy"] = results["energy"]
        structure.arrays["REF_forces"] = results["forces"]
        structure.arrays["REF_q"] = structure.arrays.pop("charges")
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, atoms)
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", charges="REF_q", required=("energy", "forces"))
    dataset = AseReadDataset(path, keys=keys, dtype=torch.float64)
    assert float(dataset[1].energy[0]) == atoms[1].info["REF_energy"]
    np.testing.assert_array_equal(dataset[1].forces.numpy(), atoms[1].arrays["REF_forces"])
    np.testing.assert_array_equal(dataset[1].charges.numpy(), atoms[1].arrays["REF_q"])


def test_database_round_trip(tmp_path: Path, structures: list[ase.Atoms]) -> None:
    sqlite_path, lmdb_path = tmp_path / "data.db", tmp_path / "data.aselmdb"
    with ase.db.connect(sqlite_path) as db:
        for index, atoms in enumerate(structures):
            db.write(atoms, sid=index, data={"charges": atoms.arrays["charges"]})
    with AseLmdbWriter(lmdb_path) as db:
        for index, atoms in enumerate(structures):
            db.write(atoms, key_value_pairs={"sid": index}, data={"charges": atoms.arrays["charges"]})
    for path in (sqlite_path, lmdb_path):
        dataset = AseDBDataset(path, dtype=torch.float64)
        assert len(dataset) == len(structures)
        assert dataset.num_atoms().tolist() == [len(atoms) for atoms in structures]
        for index, atoms in enumerate(structures):
            assert_same(dataset[index], atoms)
            assert dataset.atoms(index).info["sid"] == index
            assert dataset.row_id(index) == index + 1


def test_aselmdb_is_fairchems_layout(tmp_path: Path, structures: list[ase.Atoms]) -> None:
    """Rows are zlib JSON of AtomsRow fields under str(id), as fairchem's LMDBDatabase writes and reads them."""
    path = tmp_path / "data.aselmdb"
    with AseLmdbWriter(path) as db:
        db.write(structures[1], key_value_pairs={"sid": 5})
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        row = json.loads(zlib.decompress(txn.get(b"1")))
        assert json.loads(zlib.decompress(txn.get(b"nextid"))) == 2
    env.close()
    assert row["key_value_pairs"] == {"sid": 5}
    assert row["numbers"] == structures[1].numbers.tolist()
    assert row["constraints"][0]["name"] == "FixAtoms"
    assert row["energy"] == structures[1].calc.results["energy"]
    # A file written the way fairchem writes it (row dict assembled by hand) reads back.
    hand = tmp_path / "hand.aselmdb"
    env = lmdb.open(str(hand), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"1", zlib.compress(json.dumps(row).encode()))
        txn.put(b"nextid", zlib.compress(b"2"))
    env.close()
    assert_same(AseDBDataset(hand, dtype=torch.float64)[0], structures[1], charges=False)


def test_streaming_matches_map_style(tmp_path: Path, structures: list[ase.Atoms]) -> None:
    first, second = tmp_path / "a.extxyz", tmp_path / "b.extxyz"
    ase.io.write(first, structures[:5])
    ase.io.write(second, structures[5:])
    stream = StreamingAseDataset([first, second], dtype=torch.float64)
    graphs = list(stream)
    assert len(graphs) == len(structures)
    for graph, atoms in zip(graphs, structures, strict=True):
        assert_same(graph, atoms)
    shards = [list(StreamingAseDataset([first, second], rank=rank, world_size=3)) for rank in range(3)]
    assert sorted(len(shard) for shard in shards) == [4, 4, 4]
    energies = sorted(float(graph.energy[0]) for shard in shards for graph in shard)
    assert energies == pytest.approx(sorted(atoms.calc.results["energy"] for atoms in structures))


# ----------------------------------------------------------------------------------------------- bad input
def _write_bad(tmp_path: Path) -> Path:
    """Four frames: 0 good, 1 NaN forces, 2 forces of the wrong shape (in info), 3 no forces."""
    atoms = random_structures(4, seed=2)
    atoms[1].calc.results["forces"][1, 2] = np.nan
    bad_shape = atoms[2].calc.results
    atoms[2].calc = SinglePointCalculator(atoms[2], energy=bad_shape["energy"])
    atoms[2].info["forces"] = np.ones(5)
    atoms[3].calc = SinglePointCalculator(atoms[3], energy=1.0)
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, atoms)
    return path


def test_bad_frames_are_all_named(tmp_path: Path) -> None:
    path = _write_bad(tmp_path)
    dataset = AseReadDataset(path, keys=LabelKeys(required=("energy", "forces")))
    dataset[0]
    with pytest.raises(FrameError, match=rf"{path}:1: forces contain NaN or inf at atoms \[1\]"):
        dataset[1]
    with pytest.raises(DatasetError) as error:
        check_dataset(dataset)
    message = str(error.value)
    assert [problem.where for problem in error.value.problems] == [f"{path}:{index}" for index in (1, 2, 3)]
    assert "3 bad structure(s) of 4" in message
    assert f"{path}:3: missing forces: no key 'forces'" in message


def test_truncated_and_missing_files(tmp_path: Path, structures: list[ase.Atoms]) -> None:
    path = tmp_path / "cut.extxyz"
    ase.io.write(path, structures[:3])
    text = path.read_text()
    path.write_text(text[: len(text) - 80])
    with pytest.raises(DatasetError, match=rf"{path}:2: cannot be parsed by ase.io"):
        AseReadDataset(path)
    with pytest.raises(DatasetError, match=r"nothing\.extxyz: file not found"):
        AseReadDataset([tmp_path / "nothing.extxyz"])
    with pytest.raises(FrameError, match=rf"{path}:2: cannot be parsed"):
        list(StreamingAseDataset(path))


def test_corrupt_databases(tmp_path: Path, structures: list[ase.Atoms]) -> None:
    with pytest.raises(FrameError, match="file not found"):
        AseDBDataset(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(FrameError, match=rf"{junk}: not a readable ASE SQLite database"):
        AseDBDataset(junk)
    path = tmp_path / "data.aselmdb"
    with AseLmdbWriter(path) as db:
        db.write(structures[0])
        db.write(structures[1])
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"2", b"x\x9c garbage")
    env.close()
    dataset = AseDBDataset(path)
    dataset[0]
    with pytest.raises(FrameError, match=rf"{path}:1: row id 2 is corrupt"):
        dataset[1]
