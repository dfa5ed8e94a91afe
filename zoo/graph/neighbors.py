"""Neighbour lists with periodic boundary conditions, and the edge vectors of a graph.

The pairs within the cutoff come from `vesin <https://github.com/Luthaf/vesin>`_ (cell lists, per-axis
periodicity, any cell shape, cutoffs longer than the cell), one call per graph of a batch:

- CPU tensors: the ``vesin`` package on numpy arrays.
- CUDA tensors: ``vesin_torch`` on the GPU. Its CUDA kernels reserve room for
  ``max(128, ceil(cutoff**3))`` pairs per atom (the environment variable ``VESIN_CUDA_MAX_PAIRS_PER_POINT``
  raises it); a graph with more pairs per atom is computed on the CPU and its pairs moved to the GPU.
- Any other device: computed on the CPU, results moved back.

What zoo adds on top: validation with clear errors, batches with mixed periodicity, the edge convention of
:mod:`zoo.graph.atoms_graph`, ``max_neighbors`` with a deterministic tie-break and a deterministic edge order.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
import vesin
from torch import Tensor
from torch_geometric.data import Batch, Data

from zoo.graph.atoms_graph import AtomsGraph, GraphError, _check_cell, node_graph_index, num_graphs

__all__ = ["edge_vectors", "neighbor_list", "radius_graph"]

# Two distinct atoms closer than this (in the unit of ``pos``) are reported as overlapping.
OVERLAP_DISTANCE = 1e-6
# max_neighbors ranks distances rounded to this resolution (in the unit of ``pos``), so ties are exact.
DISTANCE_RESOLUTION = 1e-8
# Non-strict max_neighbors (fairchem's ``enforce_max_neighbors_strictly=False``): slack on squared distances, Å².
DEGENERACY_TOLERANCE = 0.01
_INT64_SAFE = 2**62


def neighbor_list(
    pos: Tensor,
    cell: Tensor,
    pbc: Tensor,
    cutoff: float,
    *,
    max_neighbors: int | None = None,
    strict_max_neighbors: bool = True,
    batch: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """All pairs of atoms closer than ``cutoff``, periodic images included, for one graph or a batch.

    An edge :math:`(j \\to i, S)` is listed when
    :math:`\\lVert \\vec r_j - \\vec r_i + S \\cdot \\mathbf{C} \\rVert < r_c`, with
    :math:`S \\in \\mathbb{Z}^3` zero along non-periodic directions. Every pair appears in both directions.
    The self-edge :math:`(i \\to i, 0)` is excluded; periodic images of an atom itself
    (:math:`i \\to i, S \\ne 0`) are included.

    Edges are sorted by (target, source, shift) -- receiver-sorted, as CSR kernels need -- so the output is
    the same for the same input whatever the backend. Memory and time grow linearly with the number of edges.

    Args:
        pos: ``[N, 3]`` float positions in Å.
        cell: ``[B, 3, 3]`` (or ``[3, 3]`` for one graph) cell vectors as rows in Å. Vectors along
            non-periodic directions are ignored (zeros are fine).
        pbc: ``[B, 3]`` (or ``[3]``) bool periodicity along each cell vector.
        cutoff: radius :math:`r_c` in Å, finite and > 0.
        max_neighbors: if given, keep for each target atom only its ``max_neighbors`` nearest sources,
            ranked by (distance rounded to ``DISTANCE_RESOLUTION`` = 1e-8 Å, source index, shift
            lexicographically), smallest first. The rounding makes distances that differ only by round-off
            (equivalent neighbours on a lattice) exact ties, broken the same way on every backend. The result
            is no longer symmetric: ``j`` may be kept as a neighbour of ``i`` but ``i`` not as one of ``j``.
        strict_max_neighbors: ``True`` keeps exactly ``max_neighbors`` (ties broken as above). ``False`` is
            fairchem's ``enforce_max_neighbors_strictly=False`` (the OC22 and OMat24 models): a target with more
            than ``max_neighbors`` sources keeps every source with
            :math:`r^2 \\le r_{(k+1)}^2 + 0.01` Å², :math:`r_{(k+1)}` the distance of its
            (``max_neighbors`` + 1)-th nearest source, so equidistant neighbours (shells of a crystal) are
            kept or dropped together and the count may exceed ``max_neighbors``.
        batch: ``[N]`` long graph index of each atom (``graph.batch``); ``None`` means all atoms in graph 0.

    Returns:
        ``(edge_index, edge_shift)``: ``edge_index [2, E]`` long with row 0 = source :math:`j` and row 1 =
        target :math:`i`, ``edge_shift [E, 3]`` long cell offsets :math:`S` in units of the cell vectors of
        the target's graph, both on the device of ``pos``.

    Raises:
        GraphError: invalid cutoff or ``max_neighbors``, non-float or non-finite positions, shapes that do not
            match, an invalid periodic cell, or two atoms at the same position (a zero-length edge has no
            direction).

    Example:
        >>> import torch
        >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
        >>> no_pbc = torch.zeros(3, dtype=torch.bool)
        >>> edge_index, edge_shift = neighbor_list(pos, torch.zeros(3, 3), no_pbc, cutoff=2.0)
        >>> edge_index.tolist()
        [[1, 0], [0, 1]]
    """
    cutoff = _check_cutoff(cutoff)
    if max_neighbors is not None and (
        isinstance(max_neighbors, bool) or not isinstance(max_neighbors, numbers.Integral) or max_neighbors < 1
    ):
        raise GraphError(f"max_neighbors must be a positive integer or None, got {max_neighbors!r}.")
    pos, cell, pbc, batch = _check_inputs(pos, cell, pbc, batch)
    device, num_atoms, graphs = pos.device, pos.shape[0], cell.shape[0]
    _check_cell(cell, pbc)

    # vesin runs once per graph on a contiguous block of atoms; ``order`` groups the atoms by graph when the
    # batch vector is not sorted already (PyG batches are).
    counts = torch.bincount(batch, minlength=graphs).tolist()
    if bool((batch[1:] >= batch[:-1]).all()):
        order = None
    else:
        order = torch.argsort(batch, stable=True)
    boxes = _vesin_boxes(cell, pbc)
    periodic = pbc.cpu().numpy()
    compute_device = device if device.type == "cuda" else torch.device("cpu")
    pairs = _VesinPairs(cutoff, compute_device)
    points = pos.detach().to(compute_device, torch.float64)
    if order is not None:
        points = points[order.to(compute_device)]
    targets, sources, shifts, distances = [], [], [], []
    start = 0
    for graph, count in enumerate(counts):
        if count:
            i, j, shift, distance = pairs(points[start : start + count], boxes[graph], periodic[graph])
            targets.append(i + start)
            sources.append(j + start)
            shifts.append(shift)
            distances.append(distance)
        start += count
    target = torch.cat(targets).to(device)
    source = torch.cat(sources).to(device)
    shift = torch.cat(shifts).to(device)
    distance = torch.cat(distances).to(device)
    if order is not None:
        target, source = order[target], order[source]

    _check_overlaps(target, source, distance, batch)
    if max_neighbors is not None:
        keep = _nearest(target, source, shift, distance, max_neighbors, num_atoms, strict_max_neighbors)
        target, source, shift = target[keep], source[keep], shift[keep]
    sort = _lexsort([(target, num_atoms), (source, num_atoms), *_shift_keys(shift)])
    edge_index = torch.stack([source[sort], target[sort]])
    return edge_index, shift[sort]


def radius_graph(
    graph: Data, cutoff: float, *, max_neighbors: int | None = None, strict_max_neighbors: bool = True
) -> AtomsGraph:
    """A shallow copy of ``graph`` (single or batched) with ``edge_index`` and ``edge_shift`` from
    :func:`neighbor_list` at radius ``cutoff`` (Å), ``max_neighbors`` and ``strict_max_neighbors``.

    For a batch made by :func:`zoo.graph.batch_graphs` the bookkeeping of PyG is updated too, so
    :func:`zoo.graph.unbatch_graphs` returns each graph with its own edges. ``graph`` itself is not modified.

    Raises:
        GraphError: as :func:`neighbor_list`.
    """
    edge_index, edge_shift = neighbor_list(
        graph.pos,
        graph.cell,
        graph.pbc,
        cutoff,
        max_neighbors=max_neighbors,
        strict_max_neighbors=strict_max_neighbors,
        batch=graph.batch,
    )
    out = copy.copy(graph)
    out.edge_index = edge_index
    out.edge_shift = edge_shift
    if isinstance(out, Batch) and hasattr(out, "_slice_dict"):
        graph_of_edge = node_graph_index(graph)[edge_index[1]]
        edges_per_graph = torch.bincount(graph_of_edge, minlength=num_graphs(graph)).cpu()
        edge_slices = torch.cat([torch.zeros(1, dtype=torch.long), edges_per_graph.cumsum(0)])
        node_offsets = graph._slice_dict["pos"][:-1]
        out._slice_dict = {**graph._slice_dict, "edge_index": edge_slices, "edge_shift": edge_slices}
        out._inc_dict = {
            **graph._inc_dict,
            "edge_index": node_offsets,
            "edge_shift": torch.zeros_like(node_offsets),
        }
    return out


def edge_vectors(graph: Data) -> tuple[Tensor, Tensor]:
    """Edge vectors and lengths of a graph with edges.

    :math:`\\vec r_{ij} = \\vec r_j - \\vec r_i + S_{ij} \\cdot \\mathbf{C}_{g(i)}` for every edge
    :math:`j \\to i` (``edge_index[0] = j``, ``edge_index[1] = i``). This is the one place edge vectors are
    computed: it is differentiable with respect to ``graph.pos`` and ``graph.cell`` (stress via a strain of
    the cell), and uses the dtype of ``pos``. The length has an undefined gradient at zero, which
    :func:`neighbor_list` rules out.

    Returns:
        ``(vec [E, 3], length [E])`` in Å.

    Raises:
        GraphError: ``graph`` has no edges yet.
    """
    if graph.edge_index is None or "edge_shift" not in graph:
        raise GraphError("the graph has no edge_index/edge_shift; build them first with radius_graph(graph, cutoff).")
    pos, cell = graph.pos, graph.cell
    source, target = graph.edge_index
    shift = graph.edge_shift.to(pos.dtype)
    if cell.shape[0] == 1:
        offset = shift @ cell[0]  # [E, 3]
    else:
        offset = torch.einsum("ek,ekc->ec", shift, cell[node_graph_index(graph)[target]])
    vec = pos[source] - pos[target] + offset
    return vec, torch.linalg.vector_norm(vec, dim=-1)


class _VesinPairs:
    """Full pair lists of one graph with vesin: ``vesin_torch`` for CUDA tensors, ``vesin`` (numpy) on CPU.

    vesin's CUDA kernels hold at most ``max(128, ceil(cutoff**3))`` pairs per atom; a graph with more (a dense
    or tiny periodic cell) is computed on the CPU instead and its pairs moved to the GPU.
    """

    def __init__(self, cutoff: float, device: torch.device) -> None:
        self.device = device
        self._cpu = vesin.NeighborList(cutoff=cutoff, full_list=True)
        self._cuda = None
        if device.type == "cuda":
            # A compiled torch extension, imported only when a GPU is used.
            import vesin_torch

            self._cuda = vesin_torch.NeighborList(cutoff=cutoff, full_list=True)

    def __call__(self, points: Tensor, box: np.ndarray, periodic: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pairs of ``points [n, 3]`` (float64, on ``device``): ``(i [P], j [P], shift [P, 3], distance [P])``
        on ``device``, with :math:`\\vec r_{ij} = \\vec r_j - \\vec r_i + S \\cdot \\text{box}`, self-pairs
        excluded."""
        if self._cuda is not None:
            try:
                i, j, shift, distance = self._cuda.compute(
                    points,
                    torch.from_numpy(box).to(self.device),
                    torch.from_numpy(periodic).to(self.device),
                    "ijSd",
                )
                return i.long(), j.long(), shift.long(), distance
            except RuntimeError as error:
                if "exceeds the maximum capacity" not in str(error):
                    raise
        arrays = self._cpu.compute(points.cpu().numpy(), box, periodic, "ijSd")
        i, j, shift, distance = (torch.from_numpy(array).to(self.device) for array in arrays)
        return i.long(), j.long(), shift.long(), distance


def _check_cutoff(cutoff: float) -> float:
    try:
        value = float(cutoff)
    except (TypeError, ValueError) as error:
        raise GraphError(f"cutoff must be a number in Å, got {cutoff!r}.") from error
    if not math.isfinite(value) or value <= 0:
        raise GraphError(f"cutoff must be finite and > 0 (Å), got {cutoff!r}; pass e.g. cutoff=5.0.")
    return value


def _check_inputs(
    pos: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        shape = list(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise GraphError(f"pos must be a tensor of shape [N, 3], got {shape}.")
    if pos.shape[0] == 0:
        raise GraphError("empty structure: pos has 0 atoms; a graph needs at least one atom.")
    if not pos.dtype.is_floating_point:
        raise GraphError(f"pos must be floating point, got {pos.dtype}; convert it with pos.double() or pos.float().")
    bad = ~torch.isfinite(pos).all(dim=-1)
    if bool(bad.any()):
        raise GraphError(
            f"positions contain NaN or inf at atoms {bad.nonzero().flatten()[:10].tolist()}; fix the "
            "structure (a simulation that blew up, a bad file)."
        )
    cell = torch.as_tensor(cell, device=pos.device)
    pbc = torch.as_tensor(pbc, device=pos.device)
    if cell.shape == (3, 3):
        cell = cell.unsqueeze(0)
    if pbc.shape == (3,):
        pbc = pbc.unsqueeze(0)
    if cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise GraphError(f"cell must have shape [B, 3, 3] or [3, 3], got {list(cell.shape)}.")
    if pbc.dtype != torch.bool or pbc.shape != (cell.shape[0], 3):
        raise GraphError(
            f"pbc must be a bool tensor of shape [B, 3] = [{cell.shape[0]}, 3] matching cell, got "
            f"{pbc.dtype} {list(pbc.shape)}."
        )
    graphs = cell.shape[0]
    if batch is None:
        if graphs != 1:
            raise GraphError(f"cell holds {graphs} graphs but no batch vector was given; pass batch=graph.batch.")
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    elif batch.shape != (pos.shape[0],) or batch.dtype != torch.long:
        raise GraphError(
            f"batch must be a long tensor of shape [N] = [{pos.shape[0]}], got {batch.dtype} {list(batch.shape)}."
        )
    elif batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= graphs):
        raise GraphError(f"batch holds graph indices outside 0..{graphs - 1} (cell has {graphs} graphs).")
    return pos, cell, pbc, batch


def _vesin_boxes(cell: Tensor, pbc: Tensor) -> np.ndarray:
    """Boxes ``[B, 3, 3]`` (float64) for vesin: periodic cell vectors as given, non-periodic ones replaced by
    an orthonormal basis of the complement of the periodic ones, so every box is invertible (a molecule gets
    an orthonormal box). Shifts along non-periodic directions are zero, so this changes no edge vector."""
    boxes = cell.detach().to("cpu", torch.float64).numpy().copy()
    periodic = pbc.cpu().numpy()
    rows = np.where(periodic[..., None], boxes, 0.0)
    _, _, vh = np.linalg.svd(rows)  # vh[g, k:] spans the complement of the k periodic vectors of graph g
    for graph in range(boxes.shape[0]):
        num_periodic = int(periodic[graph].sum())
        boxes[graph, ~periodic[graph]] = vh[graph, num_periodic:]
    return boxes


def _check_overlaps(target: Tensor, source: Tensor, distance: Tensor, batch: Tensor) -> None:
    overlap = distance < OVERLAP_DISTANCE
    if bool(overlap.any()):
        edge = int(overlap.nonzero()[0])
        i, j = int(target[edge]), int(source[edge])
        raise GraphError(
            f"atoms {i} and {j} (graph {int(batch[i])}) overlap: distance {float(distance[edge]):.3g} < "
            f"{OVERLAP_DISTANCE}; remove duplicate atoms (e.g. ase.geometry.get_duplicate_atoms(atoms, "
            "delete=True))."
        )


def _shift_keys(shift: Tensor) -> list[tuple[Tensor, int]]:
    """The three shift components as non-negative sort keys with their radix (lexicographic order)."""
    if shift.shape[0] == 0:
        return [(shift[:, axis], 1) for axis in range(3)]
    low = shift.min(dim=0).values
    high = shift.max(dim=0).values
    return [(shift[:, axis] - low[axis], int(high[axis] - low[axis]) + 1) for axis in range(3)]


def _lexsort(keys: Sequence[tuple[Tensor, int]]) -> Tensor:
    """Permutation that sorts rows by ``keys``, most significant first; each key holds integers in
    ``[0, radix)``. Adjacent keys are packed into one int64 while their radix product stays below
    :math:`2^{62}`, then one stable sort per packed key, least significant first."""
    packed: list[Tensor] = []
    value: Tensor | None = None
    size = 1
    for key, radix in reversed(keys):
        if value is not None and size * radix < _INT64_SAFE:
            value = value + key * size
            size *= radix
        else:
            if value is not None:
                packed.append(value)
            value, size = key, radix
    packed.append(value)
    order = torch.argsort(packed[0], stable=True)
    for key in packed[1:]:
        order = order[torch.argsort(key[order], stable=True)]
    return order


def _nearest(
    target: Tensor,
    source: Tensor,
    shift: Tensor,
    distance: Tensor,
    max_neighbors: int,
    num_atoms: int,
    strict: bool = True,
) -> Tensor:
    """Indices of the edges kept: per target, the ``max_neighbors`` smallest by (rounded distance, source,
    shift); not ``strict``, those within :data:`DEGENERACY_TOLERANCE` (on squared distances) of the next one."""
    distance_key = torch.round(distance / DISTANCE_RESOLUTION).long()
    radix = int(distance_key.max()) + 1 if distance_key.numel() else 1
    order = _lexsort([(target, num_atoms), (distance_key, radix), (source, num_atoms), *_shift_keys(shift)])
    sorted_target = target[order]
    per_target = torch.bincount(sorted_target, minlength=num_atoms)
    first = torch.cumsum(per_target, 0) - per_target
    rank = torch.arange(order.numel(), device=order.device) - first[sorted_target]
    if strict:
        return order[rank < max_neighbors]
    # [N]: squared distance of each target's (max_neighbors + 1)-th nearest source, inf if it has no more.
    bound = torch.full((num_atoms,), math.inf, dtype=distance.dtype, device=distance.device)
    next_one = rank == max_neighbors
    bound[sorted_target[next_one]] = distance[order[next_one]].pow(2)
    return order[distance[order].pow(2) <= bound[sorted_target] + DEGENERACY_TOLERANCE]
