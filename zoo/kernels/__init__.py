"""Message-passing primitives: one interface, several backends, a pure-PyTorch reference for each.

- :func:`message_aggregate`: gather -> per-edge MLP -> sum/mean at the targets, fused
  (:mod:`zoo.kernels.message`).
- :func:`segment_sum`: per-edge rows reduced into per-node rows, ``"csr"`` (deterministic) or ``"atomic"``
  (:mod:`zoo.kernels.segment`).
- :func:`gather_rotate` / :func:`rotate_back_sum`: the edge gather + Wigner rotation + m-truncation of the SO(2)
  convolutions (eSCN, EquiformerV2), and the rotation back + sum at the targets (:mod:`zoo.kernels.so2`).
- :func:`build_csr` / :class:`CSRGraph`: the receiver-sorted view of a graph, built once and shared by layers.
- :func:`set_backend`: route a model's message passing through these kernels (``zoo.load(..., backend=)``,
  ``model.backend`` in a training config).

Backends (``backend=``): ``"auto"``, ``"torch"``, ``"compile"``, ``"triton"``, ``"torch_scatter"``; see
:mod:`zoo.kernels.backends`. Edge convention: ``edge_index [2, E]``, row 0 = source :math:`j`, row 1 = target
:math:`i`; messages aggregate at the target.
"""

from torch import nn

from zoo.kernels.backends import BACKENDS, LAYOUTS, KernelError, available_backends, resolve_backend
from zoo.kernels.message import (
    EdgeMLP,
    check_fusable,
    fused_aggregate,
    message_aggregate,
    message_aggregate_reference,
)
from zoo.kernels.segment import CSRGraph, Segments, build_csr, segment_sum, sort_by_target
from zoo.kernels.so2 import SO2_BACKENDS, gather_rotate, rotate_back_sum

__all__ = [
    "BACKENDS",
    "LAYOUTS",
    "SO2_BACKENDS",
    "CSRGraph",
    "EdgeMLP",
    "KernelError",
    "Segments",
    "available_backends",
    "build_csr",
    "check_fusable",
    "fused_aggregate",
    "gather_rotate",
    "message_aggregate",
    "message_aggregate_reference",
    "resolve_backend",
    "rotate_back_sum",
    "segment_sum",
    "set_backend",
    "sort_by_target",
]


def set_backend(model: nn.Module, backend: str | None) -> nn.Module:
    """Run ``model``'s message passing through :func:`message_aggregate` with ``backend`` (``None``: the model's
    own PyTorch code, the default). A runtime setting, not part of the checkpoint; results equal to round-off.

    Models with a fused path: ``egnn-qm9`` and other :class:`~zoo.models.egnn.EGNN` models without coordinate
    updates (``egnn-potential``, the EMT demo) and ``fa-gnn-nbody`` (:func:`message_aggregate`, any backend);
    eSCN and EquiformerV2 (:func:`gather_rotate` / :func:`rotate_back_sum`: ``"auto"``, ``"torch"``,
    ``"triton"``).

    Raises:
        KernelError: an unknown backend, or a model (or layer) without a fused path, named with the reason.
    """
    setter = getattr(model, "set_backend", None)
    if setter is None:
        raise KernelError(
            f"{type(model).__name__} has no fused message-passing path (backend={backend!r}); models with one: "
            "EGNN models without coordinate updates (egnn-qm9, egnn-potential), fa-gnn-nbody, eSCN, EquiformerV2"
        )
    setter(backend)
    return model
