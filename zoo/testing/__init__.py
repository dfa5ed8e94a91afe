"""Helpers for testing models and Hub repos, for zoo's own tests and for yours.

* :func:`assert_equivariant` — rotation x reflection x translation x permutation check with an error table;
* :class:`LoopbackHub` — an in-memory Hugging Face Hub on 127.0.0.1 (with fault injection);
* tiny graphs — :func:`molecule_graph`, :func:`slab_graph`, :func:`bulk_graph`, :func:`point_cloud_graph`,
  :func:`nbody_graph`.
"""

from zoo.testing.equivariance import EquivarianceReport, assert_equivariant, random_orthogonal
from zoo.testing.graphs import bulk_graph, molecule_graph, nbody_graph, point_cloud_graph, slab_graph
from zoo.testing.hub_server import LoopbackHub

__all__ = [
    "EquivarianceReport",
    "LoopbackHub",
    "assert_equivariant",
    "bulk_graph",
    "molecule_graph",
    "nbody_graph",
    "point_cloud_graph",
    "random_orthogonal",
    "slab_graph",
]
