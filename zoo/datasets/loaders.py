"""Batching: a batch sampler by count or by atoms/edges budget (DDP-aware), and loaders built on it.

:class:`GraphBatchSampler` cuts a seeded permutation of the dataset into batches that hold at most
``batch_size`` structures and/or at most ``max_atoms`` atoms and/or ``max_edges`` edges. With ``world_size``
> 1 the global batches are dealt to ranks round-robin: ranks see disjoint structures, together every structure
exactly once per epoch, and every rank the same number of batches (DDP steps in lock-step). The order is a pure
function of ``(seed, epoch)``.

:func:`make_loader` wraps a dataset in a :class:`torch.utils.data.DataLoader` with that sampler and PyG
batching (:func:`zoo.graph.batch_graphs`); workers open LMDB/SQLite handles of their own.
:func:`stream_batches` batches an iterable (e.g. :class:`~zoo.datasets.StreamingAseDataset`) under the same
budgets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from torch_geometric.data import Batch

from zoo.graph import AtomsGraph, batch_graphs

__all__ = ["GraphBatchSampler", "graph_sizes", "make_loader", "stream_batches"]


def _size(graph: AtomsGraph) -> tuple[int, int]:
    edges = graph.edge_index.shape[1] if "edge_index" in graph else 0
    return int(graph.pos.shape[0]), int(edges)


def graph_sizes(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(num_atoms [L], num_edges [L])`` of every item of ``dataset`` (after its transform), read once.

    Edges are counted from ``edge_index`` (zero for graphs without one): give the dataset a
    :class:`~zoo.datasets.transforms.RadiusGraph` transform to budget by edges.
    """
    sizes = np.array([_size(dataset[index]) for index in range(len(dataset))], dtype=np.int64).reshape(-1, 2)
    return sizes[:, 0], sizes[:, 1]


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
    world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


class GraphBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices under a count and/or atoms/edges budget, shuffled per epoch, split over ranks.

    Batches are filled greedily in permutation order: a structure that would push the current batch over a
    budget starts the next batch. No batch exceeds any budget; a single structure larger than a budget is an
    error. For DDP, while the number of batches is not a multiple of ``world_size`` the largest batch (by atoms,
    then position) is split in two; each rank then takes batches ``rank, rank + world_size, ...``.

    Args:
        num_atoms: ``[L]`` atoms of each structure (e.g. ``dataset.num_atoms()``).
        num_edges: ``[L]`` edges of each structure (see :func:`graph_sizes`); needed for ``max_edges``.
        batch_size: at most this many structures per batch.
        max_atoms: at most this many atoms per batch.
        max_edges: at most this many edges per batch.
        shuffle: a new permutation every epoch, seeded by ``(seed, epoch)``; otherwise dataset order.
        seed: base seed, the same on every rank.
        rank: this process's rank; default: ``torch.distributed`` if initialised, else 0.
        world_size: number of processes; default: ``torch.distributed`` if initialised, else 1.
        drop_last: with DDP, if the batches cannot be evened out by splitting (every batch holds one structure),
            drop the last few instead of raising.

    Raises:
        ValueError: no budget given, a budget < 1, sizes of different lengths, a structure over budget.

    Example:
        >>> sampler = GraphBatchSampler([3, 5, 2, 4], max_atoms=8, shuffle=False)
        >>> list(sampler)
        [[0, 1], [2, 3]]
    """

    def __init__(
        self,
        num_atoms: Sequence[int] | np.ndarray,
        num_edges: Sequence[int] | np.ndarray | None = None,
        *,
        batch_size: int | None = None,
        max_atoms: int | None = None,
        max_edges: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size is None and max_atoms is None and max_edges is None:
            raise ValueError("give batch_size, max_atoms or max_edges (or several).")
        for name, value in (("batch_size", batch_size), ("max_atoms", max_atoms), ("max_edges", max_edges)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_atoms = np.asarray(num_atoms, dtype=np.int64)
        if max_edges is not None and num_edges is None:
            raise ValueError("max_edges needs num_edges (see zoo.datasets.graph_sizes).")
        self.num_edges = np.asarray(num_edges, dtype=np.int64) if num_edges is not None else None
        if self.num_edges is not None and self.num_edges.shape != self.num_atoms.shape:
            raise ValueError(f"num_edges has {self.num_edges.shape[0]} entries, num_atoms {self.num_atoms.shape[0]}")
        for name, sizes, budget in (("atoms", self.num_atoms, max_atoms), ("edges", self.num_edges, max_edges)):
            if budget is not None and sizes is not None and sizes.size and int(sizes.max()) > budget:
                index = int(sizes.argmax())
                raise ValueError(
                    f"structure {index} has {int(sizes[index])} {name}, more than max_{name}={budget}; raise the "
                    "budget or remove the structure."
                )
        self.batch_size, self.max_atoms, self.max_edges = batch_size, max_atoms, max_edges
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = _distributed(rank, world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` (call before each epoch, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_atoms.size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_atoms.size, generator=generator).numpy()

    def global_batches(self) -> list[list[int]]:
        """The batches of all ranks for the current epoch, before dealing them out."""
        batches: list[list[int]] = []
        current: list[int] = []
        atoms = edges = 0
        for index in self._order().tolist():
            add_atoms = int(self.num_atoms[index])
            add_edges = int(self.num_edges[index]) if self.num_edges is not None else 0
            full = (
                (self.batch_size is not None and len(current) + 1 > self.batch_size)
                or (self.max_atoms is not None and atoms + add_atoms > self.max_atoms)
                or (self.max_edges is not None and edges + add_edges > self.max_edges)
            )
            if current and full:
                batches.append(current)
                current, atoms, edges = [], 0, 0
            current.append(index)
            atoms += add_atoms
            edges += add_edges
        if current:
            batches.append(current)
        return self._even_out(batches)

    def _even_out(self, batches: list[list[int]]) -> list[list[int]]:
        while len(batches) % self.world_size:
            splittable = [position for position, batch in enumerate(batches) if len(batch) > 1]
            if not splittable:
                if not self.drop_last:
                    raise ValueError(
                        f"{len(batches)} batches of one structure each cannot be shared evenly by {self.world_size} "
                        "ranks; pass drop_last=True or use more data."
                    )
                return batches[: len(batches) - len(batches) % self.world_size]
            largest = max(splittable, key=lambda position: (int(self.num_atoms[batches[position]].sum()), -position))
            batch = batches[largest]
            half = len(batch) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.global_batches()) // self.world_size


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int | None = None,
    max_atoms: int | None = None,
    max_edges: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    num_atoms: Sequence[int] | np.ndarray | None = None,
    num_edges: Sequence[int] | np.ndarray | None = None,
    **loader_kwargs: object,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` of batched graphs (:class:`torch_geometric.data.Batch`).

    Batches come from a :class:`GraphBatchSampler`; sizes are taken from ``num_atoms``/``num_edges`` if given,
    else ``dataset.num_atoms()`` (for count and atom budgets) or :func:`graph_sizes` (for edge budgets).
    Call ``loader.batch_sampler.set_epoch(epoch)`` before each epoch. ``loader_kwargs`` go to the DataLoader
    (``pin_memory``, ``persistent_workers``, ``multiprocessing_context``, ...).
    """
    if num_atoms is None or (max_edges is not None and num_edges is None):
        if max_edges is not None:
            num_atoms, num_edges = graph_sizes(dataset)
        elif hasattr(dataset, "num_atoms"):
            num_atoms = dataset.num_atoms()
        else:
            num_atoms = graph_sizes(dataset)[0]
    sampler = GraphBatchSampler(
        num_atoms,
        num_edges,
        batch_size=batch_size,
        max_atoms=max_atoms,
        max_edges=max_edges,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=batch_graphs, num_workers=num_workers, **loader_kwargs)


def stream_batches(
    graphs: Iterable[AtomsGraph],
    *,
    batch_size: int | None = None,
    max_atoms: int | None = None,
    max_edges: int | None = None,
) -> Iterator[Batch]:
    """Batch a stream of graphs in arrival order under the same budgets as :class:`GraphBatchSampler`.

    Raises:
        ValueError: no budget given, or a graph larger than a budget on its own.
    """
    if batch_size is None and max_atoms is None and max_edges is None:
        raise ValueError("give batch_size, max_atoms or max_edges (or several).")
    current: list[AtomsGraph] = []
    atoms = edges = 0
    for position, graph in enumerate(graphs):
        add_atoms, add_edges = _size(graph)
        if (max_atoms is not None and add_atoms > max_atoms) or (max_edges is not None and add_edges > max_edges):
            raise ValueError(
                f"graph {position} of the stream has {add_atoms} atoms and {add_edges} edges, over the budget "
                f"(max_atoms={max_atoms}, max_edges={max_edges})"
            )
        full = (
            (batch_size is not None and len(current) + 1 > batch_size)
            or (max_atoms is not None and atoms + add_atoms > max_atoms)
            or (max_edges is not None and edges + add_edges > max_edges)
        )
        if current and full:
            yield batch_graphs(current)
            current, atoms, edges = [], 0, 0
        current.append(graph)
        atoms += add_atoms
        edges += add_edges
    if current:
        yield batch_graphs(current)
