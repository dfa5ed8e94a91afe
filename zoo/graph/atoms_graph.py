"""The :class:`AtomsGraph` data type, its validated constructor and batch helpers.

An :class:`AtomsGraph` is a :class:`torch_geometric.data.Data` whose fields follow one convention (units:
Å, eV, e):

- ``pos`` ``[N, 3]``: Cartesian positions in Å, float32 or float64.
- ``z`` ``[N]`` long: atomic numbers, 1..118.
- ``x`` ``[N, F]``: node features (point clouds; instead of or besides ``z``).
- ``cell`` ``[1, 3, 3]`` (batched ``[B, 3, 3]``): cell vectors as rows in Å, dtype of ``pos``; zeros if none.
- ``pbc`` ``[1, 3]`` (batched ``[B, 3]``) bool: periodic along each cell vector.
- ``natoms`` ``[1]`` (batched ``[B]``) long: number of atoms of each graph.
- ``batch`` ``[N]`` long, batched only: graph of each atom (added by :func:`batch_graphs`).
- ``edge_index`` ``[2, E]`` long: row 0 = source :math:`j`, row 1 = target :math:`i`.
- ``edge_shift`` ``[E, 3]`` long: integer cell offsets :math:`S_{ij}` of each edge.
- ``vel`` ``[N, 3]``: velocities in ASE units, √(eV/amu) = Å per ASE time unit, as ``atoms.get_velocities()``.
- ``tags`` ``[N]`` long: ASE tags (OC20: 0 subsurface, 1 surface, 2 adsorbate).
- ``fixed`` ``[N]`` bool: atoms held fixed (ASE ``FixAtoms``).
- ``charge`` ``[1]`` (batched ``[B]``) long: total charge in e.
- ``spin`` ``[1]`` (batched ``[B]``) long: spin as stored in ``atoms.info["spin"]``.
- ``energy`` ``[1]`` (batched ``[B]``): total energy in eV.
- ``forces`` ``[N, 3]``: forces in eV/Å.
- ``stress`` ``[1, 3, 3]`` (batched ``[B, 3, 3]``): stress in eV/Å³, ASE sign convention.

Edge vectors point from the target to the source:
:math:`\\vec r_{ij} = \\vec r_j - \\vec r_i + S_{ij} \\cdot \\mathbf{C}_{g(i)}`, computed only by
:func:`zoo.graph.edge_vectors`. Messages aggregate at the target (row 1 of ``edge_index``).

Batching uses PyG's defaults unchanged: ``edge_index`` is incremented by the number of nodes of the preceding
graphs (its name contains ``index``), every other field is concatenated along dimension 0 without increment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = ["AtomsGraph", "GraphError", "batch_graphs", "node_graph_index", "num_graphs", "unbatch_graphs"]

MAX_ATOMIC_NUMBER = 118
_SINGULAR_TOL = 1e-6

# Optional per-atom fields: name -> (trailing shape, kind), kind "float" follows the dtype of ``pos``.
_NODE_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    "vel": ((3,), "float"),
    "forces": ((3,), "float"),
    "tags": ((), "long"),
    "fixed": ((), "bool"),
}
# Optional per-graph fields: name -> (shape of one graph, kind).
_GRAPH_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    "charge": ((1,), "long"),
    "spin": ((1,), "long"),
    "energy": ((1,), "float"),
    "stress": ((1, 3, 3), "float"),
}


class GraphError(ValueError):
    """Invalid structure or graph input; the message names the problem and how to fix it."""


class AtomsGraph(Data):
    """One structure (atoms, molecule or point cloud) or, after :func:`batch_graphs`, a batch of them.

    A :class:`torch_geometric.data.Data` with the fields listed in :mod:`zoo.graph.atoms_graph`; build one
    with :meth:`AtomsGraph.build` (validated) or :func:`zoo.graph.from_ase`, add edges with
    :func:`zoo.graph.radius_graph`.

    Example:
        >>> import torch
        >>> g = AtomsGraph.build(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]), torch.tensor([1, 1]))
        >>> g.cell.shape, g.pbc.tolist(), g.natoms.tolist()
        (torch.Size([1, 3, 3]), [[False, False, False]], [2])
    """

    @classmethod
    def build(
        cls,
        pos: Any,
        z: Any = None,
        *,
        x: Any = None,
        cell: Any = None,
        pbc: Any = None,
        **fields: Any,
    ) -> AtomsGraph:
        """Validated constructor of a single graph.

        Args:
            pos: ``[N, 3]`` positions in Å, float32 or float64 (kept as given).
            z: ``[N]`` integer atomic numbers in 1..118, stored as long.
            x: ``[N, F]`` node features (for point clouds), stored as given.
            cell: ``[3, 3]`` or ``[1, 3, 3]`` cell vectors as rows in Å; ``None`` means zeros (no cell).
                Cast to the dtype of ``pos``.
            pbc: ``bool``, ``[3]`` or ``[1, 3]`` periodicity along each cell vector; ``None`` means all False.
            **fields: optional fields of the table in :mod:`zoo.graph.atoms_graph` (``vel``, ``forces``,
                ``tags``, ``fixed``, ``charge``, ``spin``, ``energy``, ``stress``, ``edge_index``,
                ``edge_shift``), checked and cast; any other name is stored unchanged.

        Returns:
            The graph, every tensor on the device of ``pos``.

        Raises:
            GraphError: empty structure, non-float or non-finite positions, unknown element, a shape that does
                not match, a non-finite cell, pbc along a zero cell vector, periodic cell vectors that are
                linearly dependent.
        """
        pos = _as_tensor(pos, "pos")
        if pos.dim() != 2 or pos.shape[-1] != 3:
            raise GraphError(f"pos must have shape [N, 3], got {list(pos.shape)}; reshape it to [N, 3].")
        if pos.shape[0] == 0:
            raise GraphError("empty structure: pos has 0 atoms; a graph needs at least one atom.")
        if pos.dtype not in (torch.float32, torch.float64):
            raise GraphError(
                f"pos must be float32 or float64, got {pos.dtype}; convert it with pos.double() or pos.float()."
            )
        _check_finite_positions(pos)
        num_atoms, dtype, device = pos.shape[0], pos.dtype, pos.device

        data: dict[str, Tensor] = {"pos": pos}
        if z is not None:
            data["z"] = _atomic_numbers(_as_tensor(z, "z").to(device), num_atoms)
        if x is not None:
            x = _as_tensor(x, "x").to(device)
            if x.dim() != 2 or x.shape[0] != num_atoms:
                raise GraphError(
                    f"x must have shape [N, F] = [{num_atoms}, F], got {list(x.shape)}; "
                    "use x.unsqueeze(-1) for one feature per atom."
                )
            data["x"] = x

        if cell is None:
            cell = torch.zeros(1, 3, 3, dtype=dtype, device=device)
        else:
            cell = _as_tensor(cell, "cell").to(device=device, dtype=dtype)
            if cell.shape not in ((3, 3), (1, 3, 3)):
                raise GraphError(
                    f"cell must have shape [3, 3] (cell vectors as rows), got {list(cell.shape)}; "
                    "for an orthorhombic box with lengths (a, b, c) pass torch.diag(torch.tensor([a, b, c]))."
                )
            cell = cell.reshape(1, 3, 3)
        if pbc is None:
            pbc = torch.zeros(1, 3, dtype=torch.bool, device=device)
        else:
            pbc = _as_tensor(pbc, "pbc").to(device)
            if pbc.dtype != torch.bool:
                raise GraphError(f"pbc must be boolean, got {pbc.dtype}; pass e.g. [True, True, False].")
            if pbc.dim() == 0:
                pbc = pbc.expand(3)
            if pbc.shape not in ((3,), (1, 3)):
                raise GraphError(f"pbc must be a bool or have shape [3], got {list(pbc.shape)}.")
            pbc = pbc.reshape(1, 3)
        _check_cell(cell, pbc)
        data["cell"] = cell
        data["pbc"] = pbc
        data["natoms"] = torch.tensor([num_atoms], dtype=torch.long, device=device)

        for name, value in fields.items():
            if value is None:
                continue
            if name in _NODE_FIELDS:
                trailing, kind = _NODE_FIELDS[name]
                data[name] = _cast_field(name, value, (num_atoms, *trailing), kind, dtype, device)
            elif name in _GRAPH_FIELDS:
                shape, kind = _GRAPH_FIELDS[name]
                data[name] = _cast_field(name, value, shape, kind, dtype, device)
            elif name in ("edge_index", "edge_shift"):
                data[name] = _as_tensor(value, name).to(device)
            else:
                data[name] = value
        if ("edge_index" in data) != ("edge_shift" in data):
            raise GraphError("edge_index and edge_shift come together; pass both or neither.")
        if "edge_index" in data:
            _check_edges(data["edge_index"], data["edge_shift"], num_atoms)
        return cls(**data)


def node_graph_index(graph: Data) -> Tensor:
    """Graph of each node: ``graph.batch`` for a batch, else zeros.

    Returns:
        ``[N]`` long tensor on the device of ``graph.pos``.
    """
    batch = graph.batch
    if batch is not None:
        return batch
    return torch.zeros(graph.pos.shape[0], dtype=torch.long, device=graph.pos.device)


def num_graphs(graph: Data) -> int:
    """Number of structures in ``graph``: 1 for a single graph, ``B`` for a batch (the length of ``cell``)."""
    return int(graph.cell.shape[0])


def batch_graphs(graphs: Sequence[AtomsGraph]) -> Batch:
    """Batch graphs with :meth:`torch_geometric.data.Batch.from_data_list`.

    ``edge_index`` is offset by the atoms of the preceding graphs, ``edge_shift`` is not; per-graph fields
    (``cell``, ``pbc``, ``natoms``, ``energy``, ...) stack to ``[B, ...]``; ``batch [N]`` and
    ``ptr [B + 1]`` are added.

    Raises:
        GraphError: an empty list, or graphs with different fields (e.g. edges on some graphs only).
    """
    graphs = list(graphs)
    if not graphs:
        raise GraphError("batch_graphs got an empty list; pass at least one graph.")
    keys = set(graphs[0].keys())
    for index, graph in enumerate(graphs[1:], start=1):
        other = set(graph.keys())
        if other != keys:
            raise GraphError(
                f"graph {index} has fields {sorted(other)} but graph 0 has {sorted(keys)} "
                f"(differ: {sorted(keys ^ other)}); give every graph the same fields, e.g. run radius_graph "
                "on all of them or on the batch."
            )
    return Batch.from_data_list(graphs)


def unbatch_graphs(batch: Data) -> list[AtomsGraph]:
    """Split a batch made by :func:`batch_graphs` back into its graphs (edges included); a single graph gives
    ``[graph]``."""
    if isinstance(batch, Batch):
        return batch.to_data_list()
    return [batch]


def _as_tensor(value: Any, name: str) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise GraphError(f"{name} cannot be converted to a tensor ({error}); pass a tensor or array.") from error


def _check_finite_positions(pos: Tensor) -> None:
    bad = ~torch.isfinite(pos).all(dim=-1)
    if bool(bad.any()):
        atoms = bad.nonzero().flatten()
        raise GraphError(
            f"positions contain NaN or inf at atoms {atoms[:10].tolist()}"
            f"{' ...' if atoms.numel() > 10 else ''}; fix the structure (a simulation that blew up, a bad "
            "file)."
        )


def _atomic_numbers(z: Tensor, num_atoms: int) -> Tensor:
    if z.dtype.is_floating_point or z.dtype.is_complex or z.dtype == torch.bool:
        raise GraphError(f"z must hold integer atomic numbers, got {z.dtype}; convert it with z.long().")
    if z.shape != (num_atoms,):
        raise GraphError(f"z must have shape [N] = [{num_atoms}], got {list(z.shape)}.")
    z = z.long()
    bad = (z < 1) | (z > MAX_ATOMIC_NUMBER)
    if bool(bad.any()):
        index = bad.nonzero().flatten()
        raise GraphError(
            f"unknown element: atomic numbers {z[index[:10]].tolist()} at atoms {index[:10].tolist()} are "
            f"outside 1..{MAX_ATOMIC_NUMBER}; use real elements (dummy atoms with z=0 are not supported; "
            "give point clouds features x instead of z)."
        )
    return z


def _check_cell(cell: Tensor, pbc: Tensor) -> None:
    """Check ``cell [B, 3, 3]`` and ``pbc [B, 3]``: finite, and the periodic cell vectors of each graph are
    non-zero and linearly independent. Non-periodic cell vectors are free (zero or anything)."""
    if not bool(torch.isfinite(cell).all()):
        graphs = (~torch.isfinite(cell)).flatten(1).any(dim=1).nonzero().flatten()
        raise GraphError(f"cell contains NaN or inf (graphs {graphs[:10].tolist()}); give a finite cell.")
    cell = cell.detach().to("cpu", torch.float64)
    pbc = pbc.to("cpu")
    lengths = cell.norm(dim=-1)
    zero = pbc & (lengths == 0)
    if bool(zero.any()):
        graph, axis = zero.nonzero()[0].tolist()
        raise GraphError(
            f"pbc is True along cell vector {axis} of graph {graph}, but that vector is zero; set "
            f"pbc[{axis}] = False or give the cell vector."
        )
    rows = torch.where(pbc[..., None], cell / lengths.clamp_min(1e-300)[..., None], torch.zeros(()))
    singular_values = torch.linalg.svdvals(rows)
    num_periodic = pbc.sum(dim=-1)
    smallest = singular_values.gather(-1, (num_periodic - 1).clamp_min(0)[:, None]).squeeze(-1)
    singular = (num_periodic > 0) & (smallest < _SINGULAR_TOL)
    if bool(singular.any()):
        graph = int(singular.nonzero()[0])
        raise GraphError(
            f"the periodic cell vectors of graph {graph} are linearly dependent (singular cell, "
            f"cell={cell[graph].tolist()}, pbc={pbc[graph].tolist()}); give independent cell vectors or "
            "set pbc False along the degenerate ones."
        )


def _cast_field(
    name: str, value: Any, shape: tuple[int, ...], kind: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    tensor = _as_tensor(value, name).to(device)
    if tensor.numel() == 1 and len(shape) == 1 and shape[0] == 1:
        tensor = tensor.reshape(1)
    if shape == (1, 3, 3) and tensor.shape == (3, 3):
        tensor = tensor.reshape(1, 3, 3)
    if tuple(tensor.shape) != shape:
        raise GraphError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}.")
    if kind == "float":
        if tensor.dtype == torch.bool or tensor.dtype.is_complex:
            raise GraphError(f"{name} must hold real numbers, got {tensor.dtype}.")
        return tensor.to(dtype)
    if kind == "bool":
        if tensor.dtype != torch.bool:
            raise GraphError(f"{name} must be boolean, got {tensor.dtype}; convert it with .bool().")
        return tensor
    if tensor.dtype.is_floating_point:
        if not bool((tensor == tensor.round()).all()):
            raise GraphError(f"{name} must hold integers, got {tensor.tolist()}.")
    elif tensor.dtype == torch.bool or tensor.dtype.is_complex:
        raise GraphError(f"{name} must hold integers, got {tensor.dtype}.")
    return tensor.long()


def _check_edges(edge_index: Tensor, edge_shift: Tensor, num_atoms: int) -> None:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise GraphError(
            f"edge_index must be a long tensor of shape [2, E], got {edge_index.dtype} {list(edge_index.shape)}."
        )
    num_edges = edge_index.shape[1]
    if edge_shift.shape != (num_edges, 3) or edge_shift.dtype != torch.long:
        raise GraphError(
            f"edge_shift must be a long tensor of shape [E, 3] = [{num_edges}, 3], got {edge_shift.dtype} "
            f"{list(edge_shift.shape)}."
        )
    if num_edges and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_atoms):
        raise GraphError(f"edge_index refers to atoms outside 0..{num_atoms - 1}.")
