"""OC20/OC22 legacy LMDB: records pickled as fairchem's AtomsToGraphs writes them, read back through the allow-list."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from zoo.datasets.base import FrameError
from zoo.datasets.oc20 import OC20LmdbDataset, UnsafePickleError, safe_loads

lmdb = pytest.importorskip("lmdb")


def s2ef_record(index: int) -> Data:
    """An S2EF record with the fields and dtypes of fairchem's ``AtomsToGraphs`` (r_energy, r_forces, r_fixed)."""
    generator = torch.Generator().manual_seed(index)
    natoms = 5 + index
    pos = torch.rand(natoms, 3, generator=generator) * 8.0
    pos[:, 2] += torch.arange(natoms) * 1.5  # no overlaps
    return Data(
        pos=pos,
        cell=torch.tensor([[[8.0, 0.0, 0.0], [1.0, 8.0, 0.0], [0.0, 0.0, 30.0]]]),
        atomic_numbers=torch.tensor([29.0] * (natoms - 2) + [8.0, 1.0]),
        natoms=natoms,
        tags=torch.tensor([0] * (natoms - 3) + [1, 2, 2]),
        fixed=torch.tensor([1.0] * (natoms - 3) + [0.0, 0.0, 0.0]),
        sid=1000 + index,
        fid=index,
        y=-2.5 * index,
        force=torch.randn(natoms, 3, generator=generator),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        cell_offsets=torch.zeros(0, 3),
        distances=torch.zeros(0),
    )


def is2re_record(index: int) -> Data:
    record = s2ef_record(index)
    fields = {key: record[key] for key in ("pos", "cell", "atomic_numbers", "natoms", "tags", "fixed", "sid")}
    return Data(**fields, pos_relaxed=record.pos + 0.1, y_init=1.5 + index, y_relaxed=-0.5 - index)


def write_lmdb(path: Path, records: list, *, length: bool = True, protocol: int = -1) -> None:
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, meminit=False)
    with env.begin(write=True) as txn:
        for index, record in enumerate(records):
            txn.put(f"{index}".encode("ascii"), pickle.dumps(record, protocol=protocol))
        if length:
            txn.put(b"length", pickle.dumps(len(records), protocol=protocol))
    env.close()


@pytest.mark.parametrize("protocol", [-1, 2, 0])
def test_s2ef_round_trip(tmp_path: Path, protocol: int) -> None:
    records = [s2ef_record(index) for index in range(4)]
    path = tmp_path / "data.lmdb"
    write_lmdb(path, records, protocol=protocol)
    dataset = OC20LmdbDataset(path, dtype=torch.float32)
    assert len(dataset) == 4
    for index, record in enumerate(records):
        graph = dataset[index]
        assert torch.equal(graph.pos, record.pos)
        assert torch.equal(graph.cell, record.cell)
        assert graph.z.tolist() == record.atomic_numbers.long().tolist()
        assert graph.pbc.tolist() == [[True, True, True]]
        assert torch.equal(graph.tags, record.tags)
        assert graph.fixed.tolist() == (record.fixed == 1).tolist()
        assert graph.sid.tolist() == [record.sid] and graph.fid.tolist() == [record.fid]
        assert float(graph.energy[0]) == record.y
        assert torch.equal(graph.forces, record.force.double())
        assert "edge_index" not in graph
        assert dataset.where(index) == f"{path}:{index}"


def test_is2re_and_directory_without_length(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "a.lmdb", [is2re_record(0), is2re_record(1)], length=False)
    write_lmdb(tmp_path / "b.lmdb", [is2re_record(2)], length=False)
    dataset = OC20LmdbDataset(tmp_path)
    assert len(dataset) == 3
    graph = dataset[2]
    assert dataset.where(2) == f"{tmp_path / 'b.lmdb'}:0"
    record = is2re_record(2)
    assert torch.equal(graph.pos_relaxed, record.pos_relaxed)
    assert graph.y_init.tolist() == [record.y_init] and graph.y_relaxed.tolist() == [record.y_relaxed]
    assert graph.energy.tolist() == [record.y_relaxed]
    assert "forces" not in graph


def test_pyg1_style_record(tmp_path: Path) -> None:
    """PyG 1.x pickled Data with its fields directly in ``__dict__``."""

    class OldData:
        pass

    OldData.__module__, OldData.__qualname__ = "torch_geometric.data.data", "Data"
    old = OldData.__new__(OldData)
    old.__dict__.update({"pos": torch.rand(3, 3) * 4, "atomic_numbers": torch.tensor([1.0, 8.0, 1.0]), "y": 2.0})
    old.pos[:, 0] += torch.arange(3) * 2.0
    import sys

    module = sys.modules["torch_geometric.data.data"]
    original = module.Data
    module.Data = OldData
    try:
        blob = pickle.dumps(old, protocol=-1)
    finally:
        module.Data = original
    path = tmp_path / "old.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0", blob)
    env.close()
    graph = OC20LmdbDataset(path)[0]
    assert graph.z.tolist() == [1, 8, 1] and graph.energy.tolist() == [2.0]
    assert graph.pbc.tolist() == [[False, False, False]]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePickleError, match="system"):
        safe_loads(pickle.dumps(Exploit()))
    records = [s2ef_record(0), Data(pos=torch.zeros(1, 3), payload=Exploit())]
    path = tmp_path / "evil.lmdb"
    write_lmdb(path, records)
    dataset = OC20LmdbDataset(path)
    dataset[0]
    with pytest.raises(FrameError, match=rf"{path}:1: record 1 cannot be unpickled .*refusing to unpickle the global"):
        dataset[1]


def test_bad_records_are_named(tmp_path: Path) -> None:
    wrong_shape = s2ef_record(1)
    wrong_shape.force = torch.zeros(2, 3)
    nan_forces = s2ef_record(2)
    nan_forces.force[0, 0] = float("nan")
    missing = Data(pos=torch.zeros(2, 3))
    path = tmp_path / "bad.lmdb"
    write_lmdb(path, [s2ef_record(0), wrong_shape, nan_forces, missing])
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"4", pickle.dumps(s2ef_record(4))[:40])
        txn.put(b"length", pickle.dumps(5))
    env.close()
    dataset = OC20LmdbDataset(path)
    expected = {
        1: "forces must have shape",
        2: r"forces contain NaN or inf at atoms \[0\]",
        3: "missing field 'atomic_numbers'",
        4: "cannot be unpickled",
    }
    for index, message in expected.items():
        with pytest.raises(FrameError, match=rf"{path}:{index}: .*{message}"):
            dataset[index]
