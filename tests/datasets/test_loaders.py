"""Batch samplers and loaders: budgets hold, every structure once per epoch, DDP ranks disjoint, LMDB in workers."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from zoo.datasets.ase_db import AseDBDataset, AseLmdbWriter
from zoo.datasets.ase_files import AseReadDataset, StreamingAseDataset
from zoo.datasets.loaders import GraphBatchSampler, graph_sizes, make_loader, stream_batches
from zoo.datasets.synthetic import random_structures
from zoo.datasets.transforms import RadiusGraph

SIZES = np.random.default_rng(0).integers(1, 40, 301)
EDGES = np.random.default_rng(1).integers(0, 400, 301)


@pytest.mark.parametrize(
    "budget",
    [{"max_atoms": 60}, {"max_edges": 500}, {"max_atoms": 80, "max_edges": 600, "batch_size": 5}, {"batch_size": 7}],
)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_budget_and_coverage(budget: dict[str, int], world_size: int) -> None:
    for epoch in range(3):
        seen: list[int] = []
        counts = []
        for rank in range(world_size):
            sampler = GraphBatchSampler(SIZES, EDGES, **budget, seed=4, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            counts.append(len(batches))
            for batch in batches:
                assert batch
                assert SIZES[batch].sum() <= budget.get("max_atoms", np.inf)
                assert EDGES[batch].sum() <= budget.get("max_edges", np.inf)
                assert len(batch) <= budget.get("batch_size", np.inf)
            rank_indices = [index for batch in batches for index in batch]
            assert not set(rank_indices) & set(seen), "ranks overlap"
            seen += rank_indices
        assert sorted(seen) == list(range(SIZES.size)), "not every structure exactly once"
        assert len(set(counts)) == 1, "ranks have different numbers of batches"


def test_order_is_seeded_per_epoch() -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = GraphBatchSampler(SIZES, max_atoms=100, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(1, 0) == batches(1, 0)
    assert batches(1, 0) != batches(1, 1)
    assert batches(1, 0) != batches(2, 0)
    assert list(GraphBatchSampler([3, 5, 2, 4], max_atoms=8, shuffle=False)) == [[0, 1], [2, 3]]


def test_sampler_errors() -> None:
    with pytest.raises(ValueError, match="structure 1 has 9 atoms, more than max_atoms=8"):
        GraphBatchSampler([3, 9], max_atoms=8)
    with pytest.raises(ValueError, match="give batch_size, max_atoms or max_edges"):
        GraphBatchSampler([3, 9])
    with pytest.raises(ValueError, match="max_edges needs num_edges"):
        GraphBatchSampler([3, 9], max_edges=10)
    with pytest.raises(ValueError, match="cannot be shared evenly by 2 ranks"):
        list(GraphBatchSampler([3, 3, 3], batch_size=1, rank=0, world_size=2))
    dropped = [list(GraphBatchSampler([3, 3, 3], batch_size=1, rank=r, world_size=2, drop_last=True)) for r in (0, 1)]
    assert [len(batches) for batches in dropped] == [1, 1]


@pytest.fixture(scope="module")
def lmdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("lmdb")
    path = tmp_path_factory.mktemp("lmdb") / "data.aselmdb"
    with AseLmdbWriter(path) as db:
        for index, atoms in enumerate(random_structures(40, seed=5, periodic=True)):
            db.write(atoms, key_value_pairs={"sid": index})
    return path


def test_loader_with_workers_opens_lmdb_per_worker(lmdb_path: Path) -> None:
    dataset = AseDBDataset(lmdb_path, transform=RadiusGraph(cutoff=3.0))
    dataset[0]  # the parent has an open handle; workers must not reuse it
    loader = make_loader(dataset, max_atoms=50, num_workers=2, seed=3, multiprocessing_context="fork")
    energies = []
    for batch in loader:
        assert int(batch.natoms.sum()) <= 50
        assert batch.edge_index.shape[1] == batch.edge_shift.shape[0]
        energies += batch.energy.tolist()
    expected = [float(dataset[index].energy[0]) for index in range(len(dataset))]
    assert sorted(energies) == pytest.approx(sorted(expected))


def test_loader_edge_budget(lmdb_path: Path) -> None:
    dataset = AseDBDataset(lmdb_path, transform=RadiusGraph(cutoff=3.0))
    num_atoms, num_edges = graph_sizes(dataset)
    budget = int(num_edges.max()) * 2
    loader = make_loader(dataset, max_edges=budget, num_atoms=num_atoms, num_edges=num_edges, rank=1, world_size=2)
    assert all(batch.edge_index.shape[1] <= budget for batch in loader)


def test_stream_batches(tmp_path: Path) -> None:
    path = tmp_path / "data.extxyz"
    structures = random_structures(25, seed=6, periodic=False)
    ase.io.write(path, structures)
    batches = list(stream_batches(StreamingAseDataset(path), max_atoms=30))
    assert all(int(batch.natoms.sum()) <= 30 for batch in batches)
    assert sum(batch.num_graphs for batch in batches) == 25
    loader = torch.utils.data.DataLoader(
        StreamingAseDataset(path), batch_size=4, num_workers=2, collate_fn=_batch, multiprocessing_context="fork"
    )
    assert sum(batch.num_graphs for batch in loader) == 25
    map_style = AseReadDataset(path)
    assert sum(batch.num_graphs for batch in make_loader(map_style, batch_size=4)) == 25


def _batch(graphs):
    from zoo.graph import batch_graphs

    return batch_graphs(graphs)
