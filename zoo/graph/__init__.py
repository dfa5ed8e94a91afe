"""Structures as graphs: the ground floor of zoo.

:class:`AtomsGraph` holds one structure (or, batched, many) as a :class:`torch_geometric.data.Data`:
positions ``pos [N, 3]`` in Å, atomic numbers ``z [N]`` (or features ``x`` for point clouds),
``cell [B, 3, 3]``, ``pbc [B, 3]``, ``natoms [B]`` and, after :func:`radius_graph`, the edges
``edge_index [2, E]`` (row 0 = source :math:`j`, row 1 = target :math:`i`; messages aggregate at the target)
with integer cell offsets ``edge_shift [E, 3]``, so that

.. math:: \\vec r_{ij} = \\vec r_j - \\vec r_i + S_{ij} \\cdot \\mathbf{C}_{g(i)},

computed by :func:`edge_vectors` and nowhere else. The full list of fields and units is in
:mod:`zoo.graph.atoms_graph`.

Example:
    >>> from ase.build import bulk
    >>> from zoo.graph import edge_vectors, from_ase, radius_graph
    >>> graph = radius_graph(from_ase(bulk("Cu", "fcc", a=3.61)), cutoff=3.0)
    >>> vec, length = edge_vectors(graph)
    >>> graph.edge_index.shape[1], round(float(length.max()), 3)
    (12, 2.553)
"""

from zoo.graph.ase_io import from_ase, to_ase
from zoo.graph.atoms_graph import (
    AtomsGraph,
    GraphError,
    batch_graphs,
    node_graph_index,
    num_graphs,
    unbatch_graphs,
)
from zoo.graph.neighbors import edge_vectors, neighbor_list, radius_graph

__all__ = [
    "AtomsGraph",
    "GraphError",
    "batch_graphs",
    "edge_vectors",
    "from_ase",
    "neighbor_list",
    "node_graph_index",
    "num_graphs",
    "radius_graph",
    "to_ase",
    "unbatch_graphs",
]
