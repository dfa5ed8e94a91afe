"""Message-passing primitives: one interface, several backends, a pure-PyTorch reference for each.

- :func:`message_aggregate`: gather -> per-edge MLP -> sum/mean at the targets, fused
  (:mod:`zoo.kernels.message`).
- :func:`segment_sum`: per-edge rows reduced into per-node rows, ``"csr"`` (deterministic) or ``"atomic"``
  (:mod:`zoo.kernels.segment`).
- :func:`build_csr` / :class:`CSRGraph`: the receiver-sorted view of a graph, built once and shared by layers.

Backends (``backend=``): ``"auto"``, ``"torch"``, ``"compile"``, ``"triton"``, ``"torch_scatter"``; see
:mod:`zoo.kernels.backends`. Edge convention: ``edge_index [2, E]``, row 0 = source :math:`j`, row 1 = target
:math:`i`; messages aggregate at the target.
"""

from zoo.kernels.backends import BACKENDS, LAYOUTS, KernelError, available_backends, resolve_backend
from zoo.kernels.message import EdgeMLP, message_aggregate, message_aggregate_reference
from zoo.kernels.segment import CSRGraph, Segments, build_csr, segment_sum, sort_by_target

__all__ = [
    "BACKENDS",
    "LAYOUTS",
    "CSRGraph",
    "EdgeMLP",
    "KernelError",
    "Segments",
    "available_backends",
    "build_csr",
    "message_aggregate",
    "message_aggregate_reference",
    "resolve_backend",
    "segment_sum",
    "sort_by_target",
]
