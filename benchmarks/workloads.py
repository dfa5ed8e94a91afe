"""Benchmark workloads: synthetic graphs shaped like real data sets, and one EGNN layer written by each peer.

Graphs (edges sorted by target, row 0 = source, row 1 = target, as ``zoo.graph.neighbor_list`` returns them):

- ``qm9``: batches of 18-atom molecules, every pair of atoms of a molecule connected (17 neighbours).
- ``oc20``: batches of 80-atom periodic cells, cutoff 6 Å, about 50 neighbours per atom.
- ``bulk-10k`` / ``bulk-64k``: one periodic box of 10 240 / 65 536 atoms, cutoff 5 Å, about 26 neighbours.

The layer is the EGNN ``E_GCL`` as used on QM9 (no coordinate update):
:math:`m_{ij} = \\phi_e([h_i, h_j, \\lVert x_i - x_j \\rVert^2])`,
:math:`h_i' = h_i + \\phi_h([h_i, \\sum_{j \\to i} m_{ij}])`, every peer sharing the same weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import vesin
from torch import Tensor, nn

from zoo.kernels import CSRGraph, build_csr, message_aggregate


@dataclass
class Graph:
    """A benchmark graph: ``pos [N, 3]``, ``edge_index [2, E]`` sorted by target, its :class:`CSRGraph`."""

    name: str
    pos: Tensor
    edge_index: Tensor
    csr: CSRGraph

    @property
    def num_nodes(self) -> int:
        return self.pos.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]


def _sorted_edges(source: np.ndarray, target: np.ndarray) -> Tensor:
    order = np.lexsort((source, target))
    return torch.from_numpy(np.stack([source[order], target[order]]).astype(np.int64))


def _periodic_box(num_atoms: int, density: float, cutoff: float, rng: np.random.Generator) -> tuple:
    length = (num_atoms / density) ** (1 / 3)
    points = rng.uniform(0.0, length, (num_atoms, 3))
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j = calculator.compute(points=points, box=np.eye(3) * length, periodic=True, quantities="ij")
    return points, j.astype(np.int64), i.astype(np.int64)


def make_graph(name: str, device: torch.device, seed: int = 0) -> Graph:
    """One of the workloads of this module's docstring, on ``device``, float32 positions."""
    rng = np.random.default_rng(seed)
    if name == "qm9":
        molecules, atoms = 1024 if device.type == "cuda" else 64, 18
        pos = rng.normal(0.0, 1.5, (molecules * atoms, 3))
        local_i, local_j = np.nonzero(~np.eye(atoms, dtype=bool))
        offsets = np.repeat(np.arange(molecules) * atoms, local_i.size)
        source, target = np.tile(local_j, molecules) + offsets, np.tile(local_i, molecules) + offsets
    elif name == "oc20":
        systems, atoms = 64 if device.type == "cuda" else 8, 80
        parts = [_periodic_box(atoms, 0.055, 6.0, rng) for _ in range(systems)]
        pos = np.concatenate([p[0] for p in parts])
        source = np.concatenate([p[1] + k * atoms for k, p in enumerate(parts)])
        target = np.concatenate([p[2] + k * atoms for k, p in enumerate(parts)])
    elif name.startswith("bulk-"):
        num_atoms = {"bulk-10k": 10240, "bulk-64k": 65536}[name]
        pos, source, target = _periodic_box(num_atoms, 0.05, 5.0, rng)
    else:
        raise ValueError(f"unknown workload {name!r}")
    edge_index = _sorted_edges(source, target).to(device)
    pos_t = torch.as_tensor(pos, dtype=torch.float32, device=device)
    return Graph(name, pos_t, edge_index, build_csr(edge_index, pos_t.shape[0]))


class EGNNLayer(nn.Module):
    """Weights of one EGNN layer (official key names: ``edge_mlp.0.weight``, ``node_mlp.0.weight``, ...)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def update(self, h: Tensor, aggregated: Tensor) -> Tensor:
        return h + self.node_mlp(torch.cat([h, aggregated], dim=1))


def _radial(pos: Tensor, edge_index: Tensor) -> Tensor:
    return (pos[edge_index[1]] - pos[edge_index[0]]).pow(2).sum(-1, keepdim=True)


def zoo_layer(layer: EGNNLayer, backend: str, layout: str = "csr") -> Callable[[Tensor, Graph], Tensor]:
    """The layer through :func:`zoo.kernels.message_aggregate`."""

    def forward(h: Tensor, graph: Graph) -> Tensor:
        radial = _radial(graph.pos, graph.edge_index)
        edges = graph.csr if layout == "csr" else graph.edge_index
        aggregated = message_aggregate(h, edges, radial, layer.edge_mlp, backend=backend, layout=layout)
        return layer.update(h, aggregated)

    return forward


def eager_layer(layer: EGNNLayer) -> Callable[[Tensor, Graph], Tensor]:
    """Plain PyTorch as in the official EGNN code: ``index_select`` gathers, concat, MLP, ``index_add_``."""

    def forward(h: Tensor, graph: Graph) -> Tensor:
        source, target = graph.edge_index[0], graph.edge_index[1]
        radial = _radial(graph.pos, graph.edge_index)
        edge_in = torch.cat([h.index_select(0, target), h.index_select(0, source), radial], dim=1)
        message = layer.edge_mlp(edge_in)
        aggregated = message.new_zeros(h.shape[0], message.shape[1]).index_add_(0, target, message)
        return layer.update(h, aggregated)

    return forward


def pyg_layer(layer: EGNNLayer, use_torch_scatter: bool) -> nn.Module:
    """The layer as a PyG ``MessagePassing``; ``use_torch_scatter`` aggregates with ``torch_scatter.scatter``
    (PyG's own ``"sum"`` aggregation uses ``Tensor.scatter_add_``)."""
    from torch_geometric.nn import MessagePassing

    class EGNNConv(MessagePassing):
        def __init__(self) -> None:
            super().__init__(aggr="sum")
            self.layer = layer

        def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
            radial = _radial(pos, edge_index)
            aggregated = self.propagate(edge_index, x=h, radial=radial)
            return self.layer.update(h, aggregated)

        def message(self, x_i: Tensor, x_j: Tensor, radial: Tensor) -> Tensor:
            return self.layer.edge_mlp(torch.cat([x_i, x_j, radial], dim=-1))

    class EGNNConvScatter(EGNNConv):
        def aggregate(self, inputs: Tensor, index: Tensor, ptr=None, dim_size=None) -> Tensor:
            import torch_scatter

            return torch_scatter.scatter(inputs, index, dim=0, dim_size=dim_size, reduce="sum")

    return EGNNConvScatter() if use_torch_scatter else EGNNConv()


def bytes_moved(graph: Graph, hidden: int, dtype: torch.dtype, two_layer: bool) -> int:
    """Logical bytes of one fused message-passing forward in its smallest (receiver-sorted) form: node
    projections ``P, Q [N, H]`` read once per target / once per edge (each gathered row counted every time),
    ``[E, 1]`` edge features, the source index of each edge and the row pointers (int64), the ``[N, H]`` output
    written; weights once. Target indices are not counted: the CSR kernels read row pointers instead (the atomic
    layout, which reads them too, is measured against the same figure)."""
    size = torch.empty((), dtype=dtype).element_size()
    n, e = graph.num_nodes, graph.num_edges
    weights = (hidden * hidden + hidden) * size if two_layer else 0
    return (n * hidden + e * hidden + e + n * hidden) * size + e * 8 + (n + 1) * 8 + weights


def bytes_moved_backward(graph: Graph, hidden: int, dtype: torch.dtype, two_layer: bool) -> int:
    """Logical bytes of the input gradients of one fused message-passing call (forces with frozen weights), in
    the smallest receiver-sorted form: the forward's inputs again (:func:`bytes_moved` less its output), the
    output gradient ``[N, H]`` read once per target, the gradients of ``P, Q [N, H]`` and of the ``[E, 1]`` edge
    features written. Per-edge intermediates an implementation keeps (the Triton kernel stores ``dL/d pre`` once
    for the sums over sources) are not counted: its share of copy bandwidth is a lower bound."""
    size = torch.empty((), dtype=dtype).element_size()
    n, e = graph.num_nodes, graph.num_edges
    inputs = bytes_moved(graph, hidden, dtype, two_layer) - n * hidden * size
    return inputs + (n * hidden + 2 * n * hidden + e) * size


def flops(graph: Graph, hidden: int, two_layer: bool) -> float:
    """Floating-point operations of one fused forward (multiply-add = 2), projections included."""
    n, e = graph.num_nodes, graph.num_edges
    edge = 2 * hidden * (1 + (hidden if two_layer else 0)) + 4 * hidden
    return float(2 * n * 2 * hidden * hidden + e * edge)


def write_results(out: Path, results: object, table: str) -> str:
    """``out/results.json`` (the results as JSON) and ``out/results.md`` (``table``), written whole each call;
    returns ``table``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table if table.endswith("\n") else table + "\n")
    return table


def gib(nbytes: float) -> float:
    return nbytes / 2**30


def round_sig(x: float, digits: int = 3) -> float:
    return 0.0 if x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))
