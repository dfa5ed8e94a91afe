"""Reductions over the edges of a graph that several models share."""

from __future__ import annotations

from torch import Tensor

__all__ = ["segment_softmax"]


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
