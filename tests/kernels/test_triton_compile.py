"""Every Triton kernel the engines launch by default compiles for Hopper (sm_90) and Ampere (sm_80) without a GPU
(benchmarks/triton_compile.py: Triton's NVIDIA pipeline and ptxas on CPU tensors, with the JIT's argument
specialisation): no register spills (float64 two-layer messages excepted, see below), and the gathered feature
rows of the message kernels load as 16-byte vectors. The Triton interpreter (triton_interpreter_cases.py) checks
the values; this checks the code a GPU runs."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def _compiles_here() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    from zoo.kernels._triton_launch import compile_available

    return compile_available()


pytestmark = pytest.mark.skipif(not _compiles_here(), reason="needs Triton 3.9's compiler API and its CUDA tools")


@pytest.fixture(scope="module")
def quick_report():
    from benchmarks.triton_compile import report, variants

    return report([90], variants(quick=True))


def test_default_kernels_compile_for_sm90_without_spills(quick_report):
    failed = [row for row in quick_report if "error" in row]
    assert not failed, failed
    kernels = {row["kernel"] for row in quick_report}
    assert kernels == {
        "_csr_segment_kernel",
        "_csr_forward_kernel",
        "_atomic_forward_kernel",
        "_csr_backward_kernel",
        "_segment_rows_kernel",
        "_gather_rotate_kernel",
        "_rotate_back_sum_kernel",
    }
    # float64 two-layer messages spill on every tile tried (exact float64 products keep whole operand rows per
    # thread; they are there for validation, float32 for speed): documented in the kernels guide
    spilled = [
        (row["variant"], row["spill_bytes"])
        for row in quick_report
        if row["spill_bytes"] and not ("float64" in row["variant"] and "two-layer" in row["variant"])
    ]
    assert not spilled, spilled
    assert all(row["arch"] == 90 and 0 < row["registers"] <= 255 for row in quick_report)
    # 99 KiB: the most shared memory one program may use on sm_86 / sm_89 (sm_80: 163 KiB, sm_90: 227 KiB)
    too_big = [(row["variant"], row["shared_bytes"]) for row in quick_report if row["shared_bytes"] > 99 * 1024]
    assert not too_big, too_big


def test_message_rows_load_as_vectors(quick_report):
    """float32 H = 128: each thread of the one-layer CSR and atomic kernels loads 16 bytes per gathered row access."""
    for row in quick_report:
        if row["variant"].startswith("message") and "float32" in row["variant"] and "one-layer" in row["variant"]:
            assert row["global_loads"].get("LDG.E.128", 0) > 0, row


def test_compile_only_specialises_like_the_jit():
    """Integer arguments equal to 1 become constants and aligned pointers / multiples of 16 get divisibility
    hints, as at a real launch; the engine's tensors are left as allocated and nothing else is launched."""
    from zoo.kernels import _triton_so2
    from zoo.kernels._triton_launch import compile_only

    x = torch.randn(5, 16, 32)
    wigner = torch.randn(7, 1, 16)  # R = 1: the rows argument is specialised to a constant
    index = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    with compile_only(80) as reports:
        _triton_so2.gather_rotate(x, wigner, index)
    (only,) = reports
    assert only.kernel == "_gather_rotate_kernel" and only.arch == 80
    assert only.constants["R"] == "1" and only.constants["COMPUTE"] == "fp32"
    assert only.spill_bytes == 0


def test_a_failing_variant_is_a_row_not_a_crash(monkeypatch):
    from benchmarks import triton_compile

    def fail(variant, arch):
        raise RuntimeError("out of resource: shared memory")

    monkeypatch.setattr(triton_compile, "compile_variant", fail)
    variant = triton_compile.Variant("message", torch.float32)
    (row,) = triton_compile.report([80], [variant])
    assert row["arch"] == 80 and "out of resource" in row["error"]
    assert "failed: RuntimeError: out of resource" in triton_compile.markdown([row])


def test_spills_on_the_stack_are_counted():
    """``ptxas`` puts spilled registers on the stack frame (cuobjdump's STACK, not LOCAL): a kernel holding 256
    float32 values per thread at once must report spilled bytes."""
    import triton
    import triton.language as tl

    from zoo.kernels._triton_launch import compile_for

    @triton.jit
    def _too_many_live_values(x_ptr, out_ptr):
        offsets = tl.arange(0, 128)[:, None] * 64 + tl.arange(0, 64)[None, :]
        x = tl.load(x_ptr + offsets)
        column_sums = tl.sum(x * x, axis=0)  # every x stays live until the sums are done
        tl.store(out_ptr + offsets, x * column_sums[None, :] + tl.sqrt(x * x + 1.0))

    x = torch.randn(128, 64)
    report = compile_for(_too_many_live_values, 90, x, torch.empty_like(x), num_warps=1)
    assert report.spill_bytes > 0 and report.registers <= 255, report
