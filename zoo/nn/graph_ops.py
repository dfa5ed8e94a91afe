"""Reductions over the edges of a graph that several models share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from zoo.graph import GraphError

__all__ = ["atomic_numbers_for", "segment_softmax"]


def atomic_numbers_for(
    graph: Data, *, model: str, reads: Sequence[str], dtype: torch.dtype, max_num_elements: int
) -> Tensor:
    """Check what an atomistic model with a neighbour list of ``max_neighbors`` reads from ``graph``: every field
    in ``reads``, positions in the model's ``dtype``, atomic numbers in ``[0, max_num_elements)``; return ``z`` as
    long.

    Raises:
        GraphError: naming the missing field (and how to build the edges), the dtype mismatch or the unknown
            atomic numbers.
    """
    for field in reads:
        if getattr(graph, field, None) is None:
            raise GraphError(
                f"{model} reads graph.{field}, which this graph does not have (build the edges with "
                "zoo.graph.radius_graph(graph, model.metadata['cutoff'], "
                "max_neighbors=model.metadata['max_neighbors']))"
            )
    if graph.pos.dtype != dtype:
        raise GraphError(f"graph.pos is {graph.pos.dtype} but the model is {dtype}: cast one of them")
    z = graph.z.long()
    if bool(((z >= max_num_elements) | (z < 0)).any()):  # one host-device sync
        raise GraphError(f"this model knows atomic numbers below {max_num_elements}; got {sorted(set(z.tolist()))}")
    return z


def segment_softmax(logits: Tensor, index: Tensor, num_segments: int) -> Tensor:
    r"""Softmax over the entries that share an ``index`` (the incoming edges of each node).

    .. math:: \alpha_e = \frac{\exp(s_e - \max_{e' \in g(e)} s_{e'})}{\sum_{e' \in g(e)} \exp(s_{e'} - \max) + 10^{-16}}

    computed as ``torch_geometric.utils.softmax`` computes it (the maximum is a constant for autograd).

    Args:
        logits: ``[E, ...]`` scores.
        index: ``[E]`` long segment of each entry.
        num_segments: number of segments (nodes).

    Returns:
        ``[E, ...]`` weights summing to one (up to the :math:`10^{-16}`) within each segment.

    Example:
        >>> import torch
        >>> segment_softmax(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    shape = (num_segments, *logits.shape[1:])
    expanded = index.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    maximum = logits.new_full(shape, float("-inf")).scatter_reduce(0, expanded, logits.detach(), "amax")
    exp = (logits - maximum[index]).exp()
    total = exp.new_zeros(shape).index_add_(0, index, exp) + 1e-16
    return exp / total[index]
