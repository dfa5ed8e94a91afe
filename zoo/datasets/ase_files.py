"""Structure files that :mod:`ase.io` reads: extxyz, xyz, VASP OUTCAR/vasprun.xml, CIF, ASE trajectories, ...

:class:`AseReadDataset` holds every frame of its files in memory as :class:`ase.Atoms` (graphs are built per
item); :class:`StreamingAseDataset` reads the files frame by frame on each pass (for data larger than memory),
split between DataLoader workers and DDP ranks. Labels come from the keys of a :class:`~zoo.datasets.LabelKeys`
(as in MACE's ``--energy_key``/``--forces_key``). A file that cannot be parsed is reported with the index of
the first frame that failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from zoo.datasets.base import DatasetError, FrameError, LabelKeys, StructureDataset, Transform, atoms_to_graph
from zoo.graph import AtomsGraph, GraphError

__all__ = ["AseReadDataset", "StreamingAseDataset", "iread_frames", "read_frames"]

PathLike = str | os.PathLike[str]
# What ase.io raises on a file it cannot parse (truncated, unknown element, wrong column count, ...).
_PARSE_ERRORS = (ValueError, KeyError, IndexError, StopIteration, OSError, EOFError, TypeError, AttributeError)


def _paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("no files given; pass at least one structure file.")
    return paths


def iread_frames(path: PathLike, *, format: str | None = None) -> Iterator[ase.Atoms]:
    """Frames of one file, lazily, with ``ase.io.iread``.

    Raises:
        FrameError: the file is missing (``where`` = the file) or frame ``k`` cannot be parsed (``file:k``; a
            truncated file fails at its last, incomplete frame).
    """
    path = Path(path)
    if not path.is_file():
        raise FrameError(str(path), "file not found")
    frame = 0
    try:
        for atoms in ase.io.iread(path, index=":", format=format):
            yield atoms
            frame += 1
    except _PARSE_ERRORS as error:
        raise FrameError(
            f"{path}:{frame}",
            f"cannot be parsed by ase.io ({type(error).__name__}: {error}); the file may be truncated or corrupt",
        ) from error


def read_frames(paths: PathLike | Sequence[PathLike], *, format: str | None = None) -> list[tuple[str, ase.Atoms]]:
    """Every frame of every file as ``(where, atoms)``, ``where`` = ``"file:frame"``.

    Raises:
        DatasetError: every file that is missing, empty or unreadable, with the frame where parsing stopped.
    """
    frames: list[tuple[str, ase.Atoms]] = []
    problems: list[FrameError] = []
    for path in _paths(paths):
        count = 0
        try:
            for atoms in iread_frames(path, format=format):
                frames.append((f"{path}:{count}", atoms))
                count += 1
        except FrameError as error:
            problems.append(error)
            continue
        if count == 0:
            problems.append(FrameError(str(path), "holds no structures"))
    if problems:
        raise DatasetError(problems)
    return frames


class AseReadDataset(StructureDataset):
    """Every frame of one or more files that :func:`ase.io.read` understands, as graphs.

    The frames are parsed once, at construction, and kept as :class:`ase.Atoms`; ``dataset[i]`` converts frame
    ``i`` with :func:`~zoo.datasets.atoms_to_graph` and applies ``transform``.

    Args:
        paths: one file or several, read in order.
        keys: label keys and required labels (default: ``energy``, ``forces``, ``stress``, ``charges``).
        transform: applied to each graph (e.g. :class:`~zoo.datasets.transforms.RadiusGraph`).
        format: ase.io format name; ``None`` guesses from the file name.
        dtype: float dtype of positions and labels (default ``torch.get_default_dtype()``).

    Raises:
        DatasetError: unreadable or empty files (all listed). Bad frames are reported when read:
            ``dataset[i]`` raises :class:`~zoo.datasets.FrameError`; :func:`~zoo.datasets.check_dataset` lists
            them all.

    Example:
        >>> import ase.io, tempfile, os
        >>> from ase.build import molecule
        >>> path = os.path.join(tempfile.mkdtemp(), "water.extxyz")
        >>> ase.io.write(path, [molecule("H2O"), molecule("NH3")])
        >>> dataset = AseReadDataset(path)
        >>> len(dataset), dataset[1].z.tolist(), dataset.where(1).endswith("water.extxyz:1")
        (2, [7, 1, 1, 1], True)
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        keys: LabelKeys | None = None,
        transform: Transform | None = None,
        format: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(transform)
        self.keys = keys or LabelKeys()
        self.dtype = dtype
        self._frames = read_frames(paths, format=format)

    def __len__(self) -> int:
        return len(self._frames)

    def where(self, index: int) -> str:
        return self._frames[index][0]

    def atoms(self, index: int) -> ase.Atoms:
        """Frame ``index`` as read (a copy is not made: do not modify it)."""
        return self._frames[index][1]

    def get(self, index: int) -> AtomsGraph:
        return atoms_to_graph(self._frames[index][1], self.keys, dtype=self.dtype)

    def num_atoms(self) -> np.ndarray:
        return np.array([len(atoms) for _, atoms in self._frames], dtype=np.int64)


class StreamingAseDataset(IterableDataset):
    """Files read frame by frame on every pass, never all in memory: for data sets larger than memory.

    Frame ``k`` of the stream (counted over all files in order) goes to shard ``k mod S`` with
    :math:`S` = DDP world size × DataLoader workers, so ranks and workers see disjoint frames and together
    every frame once per pass. Batch with :func:`~zoo.datasets.loaders.stream_batches` or a
    :class:`torch.utils.data.DataLoader` with ``collate_fn=zoo.graph.batch_graphs``.

    Args:
        paths: structure files.
        keys: label keys (see :class:`~zoo.datasets.LabelKeys`).
        transform: applied to each graph.
        format: ase.io format name; ``None`` guesses.
        dtype: float dtype of positions and labels.
        rank: this process's rank; default: ``torch.distributed`` if initialised, else 0.
        world_size: number of processes; default: ``torch.distributed`` if initialised, else 1.
        skip_bad: skip structures that fail the checks instead of raising; each skipped one is appended to
            ``skipped`` (a list of :class:`~zoo.datasets.FrameError`; per process, so with DataLoader workers the
            copies in the workers hold them).

    Raises:
        FrameError: while iterating, a file or frame that cannot be used (unless ``skip_bad``; files that
            cannot be parsed always raise).
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        keys: LabelKeys | None = None,
        transform: Transform | None = None,
        format: str | None = None,
        dtype: torch.dtype | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.paths = _paths(paths)
        self.keys = keys or LabelKeys()
        self.transform = transform
        self.format = format
        self.dtype = dtype
        initialised = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1}, got {self.rank}")
        self.skip_bad = skip_bad
        self.skipped: list[FrameError] = []

    def __iter__(self) -> Iterator[AtomsGraph]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        shards = self.world_size * workers
        shard = self.rank * workers + worker_id
        position = 0
        for path in self.paths:
            for frame, atoms in enumerate(iread_frames(path, format=self.format)):
                mine = position % shards == shard
                position += 1
                if not mine:
                    continue
                try:
                    graph = atoms_to_graph(atoms, self.keys, dtype=self.dtype)
                    if self.transform is not None:
                        graph = self.transform(graph)
                except GraphError as error:
                    problem = FrameError(f"{path}:{frame}", str(error))
                    if not self.skip_bad:
                        raise problem from error
                    self.skipped.append(problem)
                    continue
                yield graph
