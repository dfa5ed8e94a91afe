"""Backend names, availability checks and the choice made by ``backend="auto"``.

=================  ==========================================================================================
backend            what runs
=================  ==========================================================================================
``"torch"``        eager PyTorch, edges processed in cache-sized chunks on CPU (no ``[E, H]`` tensor is kept
                   for backward: it is recomputed); any device and float dtype.
``"compile"``      the same chunks through ``torch.compile`` (Inductor fuses gather + add + activation).
``"triton"``       fused Triton kernels, forward and (CSR) backward (CUDA, or CPU under ``TRITON_INTERPRET=1``
                   for tests).
``"torch_scatter"`` gathers in PyTorch, reductions by ``torch_scatter`` (optional: ``pip install
                   zoo[scatter]``).
``"auto"``         ``"triton"`` for CUDA tensors and a one-layer MLP (no gate, no edge weights) when Triton is
                   installed, else
                   ``"torch"`` (on an H100 in float32 the two-layer Triton kernel was slower than cuBLAS through
                   ``"torch"``: see benchmarks/README.md).
=================  ==========================================================================================
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch

__all__ = ["BACKENDS", "LAYOUTS", "KernelError", "available_backends", "resolve_backend"]

BACKENDS = ("auto", "torch", "compile", "triton", "torch_scatter")
LAYOUTS = ("csr", "atomic")


class KernelError(ValueError):
    """Invalid input to a kernel, or a backend that cannot run here (the message says why and what to do)."""


def check_layout(layout: str) -> None:
    """Raise :class:`KernelError` unless ``layout`` is ``"csr"`` or ``"atomic"``."""
    if layout not in LAYOUTS:
        raise KernelError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def require_torch_scatter() -> ModuleType:
    """Import ``torch_scatter`` or raise :class:`KernelError` naming the extra that installs it."""
    if importlib.util.find_spec("torch_scatter") is None:
        raise KernelError(
            "backend='torch_scatter' needs the torch-scatter package: pip install zoo[scatter] "
            "(or pip install torch-scatter --no-build-isolation)"
        )
    import torch_scatter

    return torch_scatter


def require_triton(device: torch.device) -> None:
    """Raise :class:`KernelError` unless Triton is installed and can run on ``device`` (CUDA, or any device
    under ``TRITON_INTERPRET=1``)."""
    if not _has("triton"):
        raise KernelError("backend='triton' needs Triton: pip install zoo[gpu]")
    if device.type != "cuda" and not triton_interpreted():
        raise KernelError(
            f"backend='triton' runs on CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before "
            "importing zoo.kernels to run it in Triton's CPU interpreter (slow, for tests)"
        )


def triton_interpreted() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` in this environment (``"auto"`` excluded)."""
    device = torch.device(device)
    names = ["torch", "compile"]
    if _has("triton") and (device.type == "cuda" or triton_interpreted()):
        names.append("triton")
    if _has("torch_scatter"):
        names.append("torch_scatter")
    return names


def resolve_backend(backend: str, device: torch.device, *, triton_first: bool = False) -> str:
    """The backend that runs for ``backend`` on ``device`` (``triton_first``: the call is one the Triton kernel
    is fastest at, a one-layer MLP with no gate or edge weights).

    Raises:
        KernelError: an unknown name, or a backend that cannot run on ``device`` here.
    """
    if backend not in BACKENDS:
        raise KernelError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_first and _has("triton") else "torch"
    if backend == "triton":
        require_triton(device)
    if backend == "torch_scatter":
        require_torch_scatter()
    return backend
