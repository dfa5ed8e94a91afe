"""A pure-PyTorch stand-in for ``torch_scatter.scatter``, for running fairchem-core 1.10 where torch-scatter
cannot be installed (it has no CUDA wheel on PyPI and takes a CUDA toolchain and minutes to build).

fairchem-core 1.10 imports ``from torch_scatter import scatter`` at start-up (``fairchem.core.common.utils``);
the eSCN and EquiformerV2 energy/force paths that ``benchmarks/fairchem_models.py`` times never call it.
``benchmarks/gpu.sh`` puts this folder on ``PYTHONPATH`` for the fairchem benchmark only, and only when
``import torch_scatter`` fails; it is never part of zoo. The function follows torch-scatter's semantics for
``reduce`` in ``sum`` / ``add`` / ``mean`` / ``max`` / ``min`` (empty segments give 0), so a call would still be
right, and ``tests/test_benchmarks_shims.py`` checks it against index_add_ reference sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scatter"]
__version__ = "0+zoo.shim"


def _broadcast(index: Tensor, src: Tensor, dim: int) -> Tensor:
    if index.dim() == 1:
        index = index.view([1] * dim + [-1] + [1] * (src.dim() - dim - 1))
    return index.expand_as(src)


def scatter(
    src: Tensor,
    index: Tensor,
    dim: int = -1,
    out: Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> Tensor:
    """Reduce the slices of ``src`` along ``dim`` into the positions ``index`` names (torch-scatter's ``scatter``)."""
    dim = dim % src.dim()
    index = _broadcast(index, src, dim)
    if out is None:
        size = list(src.shape)
        size[dim] = dim_size if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)
        out = src.new_zeros(size)
    if reduce in ("sum", "add"):
        return out.scatter_add_(dim, index, src)
    if reduce == "mean":
        out.scatter_add_(dim, index, src)
        count = torch.zeros_like(out).scatter_add_(dim, index, torch.ones_like(src))
        return out / count.clamp(min=1)
    if reduce in ("max", "min"):
        return out.scatter_reduce_(dim, index, src, reduce="a" + reduce, include_self=False)
    raise ValueError(f"reduce must be one of sum, add, mean, max, min; got {reduce!r}")
