"""``zoo.load``: name -> card -> files -> config -> module -> weights."""

from __future__ import annotations

import os

import torch

from zoo.checkpoint import from_pretrained
from zoo.hub import resolve
from zoo.kernels import set_backend

__all__ = ["load"]


def load(
    name: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    backend: str | None = None,
) -> torch.nn.Module:
    """Load a pretrained model, ready for inference (``eval()`` mode).

    Args:
        name: a card name (``zoo.list_models()``), an alias (logged as ``alias -> name``),
            ``"hf-hub:org/name@revision"`` for any zoo-format Hub repo, or a local checkpoint directory.
        revision: Hub branch, tag or commit for ``hf-hub:`` names.
        device: where to put the model.
        dtype: parameter dtype (e.g. ``torch.float64`` for finite-difference checks).
        cache_dir: Hugging Face cache directory (zoo's own cache goes to ``<cache_dir>/zoo``).
        local_files_only: never download; serve from the cache (as ``HF_HUB_OFFLINE=1``).
        token: Hugging Face token for gated or private repos (default: the logged-in one / ``HF_TOKEN``).
        backend: run the model's message passing through :mod:`zoo.kernels` with this backend (``"auto"``,
            ``"torch"``, ``"compile"``, ``"triton"``, ``"torch_scatter"``; :func:`zoo.kernels.set_backend`);
            ``None`` keeps the model's own PyTorch code.

    Returns:
        The module, with ``metadata`` (cutoff, units, task, ...) and ``card`` attached.

    Example:
        >>> import zoo
        >>> zoo.load("no-such-model")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        zoo.registry.UnknownModelError: unknown model 'no-such-model'. ...
    """
    resolved = resolve(name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    model = from_pretrained(resolved.directory, device=device, dtype=dtype, card=resolved.card)
    if backend is not None:
        set_backend(model, backend)
    return model
