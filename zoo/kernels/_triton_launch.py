"""Launching zoo's Triton kernels, or compiling them for a CUDA architecture without a GPU.

Every Triton kernel of :mod:`zoo.kernels` is launched through :func:`launch`. Inside :func:`compile_only` the
launch compiles instead of running: the arguments are specialised the way Triton's JIT specialises them at a real
launch (pointer and integer alignment to 16, integers equal to 1 as constants), the kernel goes through the full
NVIDIA pipeline (TTIR, TTGIR, LLVM IR, PTX, and ``ptxas`` to a cubin) for the requested ``sm_XX``, and the
cubin's resource usage is read back with ``cuobjdump``. Both tools ship in Triton's wheel, so this runs on any
machine: the test suite uses it to show that every kernel variant the engines can launch compiles for Ampere and
Hopper without register spills, something Triton's CPU interpreter cannot show.

Usage (``benchmarks/triton_compile.py`` does this for every variant)::

    with compile_only(arch=90) as reports:
        ENGINE.forward(inputs, plan, "silu")  # CPU tensors: compiled for sm_90, nothing runs
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import triton

__all__ = ["CompileReport", "compile_available", "compile_only", "launch"]


@dataclasses.dataclass
class CompileReport:
    """One kernel compiled for one architecture.

    Attributes:
        kernel: the kernel's name.
        arch: the compute capability (``90`` = sm_90).
        constants: the constexpr arguments and launch options it was compiled with.
        registers: registers per thread.
        spill_bytes: local memory and stack frame per thread (``cuobjdump``'s LOCAL + STACK: register spills,
            which recent ``ptxas`` puts on the stack; 0 when everything fits in registers).
        shared_bytes: shared memory per program (Triton's allocation: dot operands, reductions, pipelining).
        global_loads: global load instructions in the SASS by kind and width (``"LDG.E.128"``: 16-byte vector
            loads into registers; ``"LDGSTS..."``: asynchronous copies into shared memory, Triton's pipelining).
    """

    kernel: str
    arch: int
    constants: dict[str, Any]
    registers: int
    spill_bytes: int
    shared_bytes: int
    global_loads: dict[str, int]


_RECORDER: list[CompileReport] | None = None
_ARCH = 90


def launch(kernel: triton.JITFunction, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """``kernel[grid](*args, **kwargs)``, or, inside :func:`compile_only`, its compilation for the architecture
    given there (nothing runs; outputs stay as allocated)."""
    if _RECORDER is None:
        kernel[grid](*args, **kwargs)
    else:
        _RECORDER.append(compile_for(kernel, _ARCH, *args, **kwargs))


@contextlib.contextmanager
def compile_only(arch: int = 90) -> Iterator[list[CompileReport]]:
    """Inside the block, every :func:`launch` compiles its kernel for ``sm_{arch}`` and appends a
    :class:`CompileReport` to the yielded list instead of running it (the tensors may live on the CPU)."""
    global _RECORDER, _ARCH
    previous = _RECORDER, _ARCH
    _RECORDER, _ARCH = [], arch
    try:
        yield _RECORDER
    finally:
        _RECORDER, _ARCH = previous


def compile_available() -> bool:
    """True when this Triton exposes what :func:`compile_for` uses (its JIT's argument specialisation, the AST
    source of the compiler) and ships ``ptxas`` / ``cuobjdump``: Triton 3.9's layout; other versions may differ."""
    try:
        from triton._C.libtriton import native_specialize_impl  # noqa: F401
        from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401

        _tool("cuobjdump")
        _tool("ptxas")
    except (ImportError, FileNotFoundError):
        return False
    return True


def compile_for(kernel: triton.JITFunction, arch: int, *args: Any, **kwargs: Any) -> CompileReport:
    """Compile ``kernel`` for ``sm_{arch}`` with the specialisation Triton's JIT gives these arguments."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource

    names = [param.name for param in kernel.params]
    bound = dict(zip(names, args, strict=False))
    bound.update({key: value for key, value in kwargs.items() if key in names})
    missing = [name for name in names if name not in bound]
    if missing:
        raise TypeError(f"{kernel.__name__}: arguments missing for compilation: {missing}")
    options = {key: value for key, value in kwargs.items() if key not in names}
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, param in enumerate(kernel.params):
        value = bound[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(i,)] = value
            continue
        kind, spec = native_specialize_impl(
            BaseBackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment
        )
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(i,)] = spec
        else:
            attrs[(i,)] = BaseBackend.parse_attr(spec)
    source = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    usage, sass = _inspect(compiled.asm["cubin"])
    loads: dict[str, int] = {}
    for width in re.findall(r"\b(LDGSTS\.E(?:\.\w+)*|LDG\.E(?:\.\w+)*)", sass):
        loads[width] = loads.get(width, 0) + 1
    constants = {name: bound[name] for name, kind in signature.items() if kind == "constexpr"}
    constants.update(options)
    return CompileReport(
        kernel=kernel.__name__,
        arch=arch,
        constants={key: str(value) for key, value in constants.items()},
        registers=usage["REG"],
        spill_bytes=usage.get("LOCAL", 0) + usage.get("STACK", 0),
        shared_bytes=int(compiled.metadata.shared),
        global_loads=loads,
    )


def _tool(name: str) -> Path:
    """A CUDA binary tool from Triton's wheel (``cuobjdump``)."""
    import triton.backends.nvidia

    path = Path(triton.backends.nvidia.__file__).parent / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: this Triton wheel ships no {name}")
    return path


def _inspect(cubin: bytes) -> tuple[dict[str, int], str]:
    """(resource usage, SASS) of a cubin, from ``cuobjdump``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        tool = str(_tool("cuobjdump"))
        usage = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True)
        sass = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, check=True)
    fields = {key: int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage.stdout)}
    return fields, sass.stdout
