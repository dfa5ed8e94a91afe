"""The Triton backend against the reference: on CPU in Triton's interpreter (triton_interpreter_cases.py, small
graphs, run in a fresh process), on CUDA with ``pytest -m gpu`` (larger graphs, float32 / float64 / bfloat16,
bitwise determinism of every CSR backend)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _kernel_helpers import TOLERANCES, check_parity, make_case

from zoo.kernels import KernelError, build_csr, message_aggregate, message_aggregate_reference

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
CASES = Path(__file__).with_name("triton_interpreter_cases.py")


@pytest.mark.skipif(CUDA, reason="CUDA present: the gpu tests run the kernels for real")
def test_interpreter_suite():
    """triton_interpreter_cases.py in a fresh process with TRITON_INTERPRET=1: Triton reads the variable when
    it is first imported, which in this process may already have happened."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", str(CASES)]
    root = Path(__file__).parents[2]  # the repository: the cases import benchmarks/ too
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    h, edge_index, edge_attr, mlp = make_case(torch.float64, "cpu", 10, 2, 3, 1, 8, 8)
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):
        message_aggregate(h, edge_index, edge_attr, mlp, backend="triton")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("block_n", 24, "block_n must be a power of two"),
        ("block_n", 0, "block_n must be a power of two"),
        ("block_e", 8, "power of two >= 16"),
        ("num_warps", 3, "num_warps"),
        ("num_stages", 0, "num_stages"),
    ],
)
def test_launch_config_rejects_bad_tiles(field, value, match):
    from zoo.kernels._triton_message import LaunchConfig

    with pytest.raises(KernelError, match=match):
        LaunchConfig(**{field: value})


def test_launch_config_rejects_few_onehot_rows():
    from zoo.kernels._triton_message import LaunchConfig, resolve_config

    with pytest.raises(KernelError, match="block_n must be >= 16 with reduction='onehot'"):
        LaunchConfig(reduction="onehot", block_n=4)
    with pytest.raises(KernelError, match="reduction must be one of"):
        LaunchConfig(reduction="scatter")
    # defaults: one row per program for one-layer segment messages, 16 rows sharing W_2 for two-layer ones
    assert resolve_config(LaunchConfig(), 128, 128, two_layer=False).block_n == 1
    assert resolve_config(LaunchConfig(), 128, 128, two_layer=True).block_n == 16
    assert resolve_config(LaunchConfig(reduction="onehot"), 128, 128, two_layer=False).block_n == 16
    assert resolve_config(LaunchConfig(), 128, 128, two_layer=True, element_size=8).block_o == 64
    # a gated message keeps all its columns in one program (the gate is a dot product over them)
    assert resolve_config(LaunchConfig(), 128, 128, two_layer=True, element_size=8, gated=True).block_o == 128
    with pytest.raises(KernelError, match="a gated message needs all its 40 columns in one program: block_o >= 64"):
        resolve_config(LaunchConfig(block_o=32), 40, 40, two_layer=True, gated=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize(
    ("dtype", "edge_dim", "hidden", "out"),
    [
        (torch.float32, 1, 128, 128),
        (torch.float32, 0, 64, None),
        (torch.float64, 3, 64, 64),
        (torch.float32, 40, 256, 256),
        (torch.float32, 5, 48, 80),
    ],
)
def test_cuda_parity(layout, dtype, edge_dim, hidden, out):
    case = make_case(dtype, "cuda", 3000, 24, 32, edge_dim, hidden, out)
    check_parity(*case, backend="triton", layout=layout, against_float64=dtype == torch.float32)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "config",
    [
        {"reduction": "onehot"},
        {"reduction": "onehot", "exact_sums": True, "block_n": 32, "num_stages": 2},
        {"block_n": 8, "block_e": 64, "block_o": 64, "num_warps": 4, "num_stages": 3},
    ],
)
@pytest.mark.parametrize("out", [None, 128])
def test_cuda_launch_configs(config, out):
    """Non-default configurations (what the sweep tries) on CUDA, one- and two-layer, float32."""
    from zoo.kernels import _triton_message

    case = make_case(torch.float32, "cuda", 3000, 24, 32, 1, 128, out)
    with _triton_message.launch_config(_triton_message.LaunchConfig(**config)):
        check_parity(*case, backend="triton", layout="csr", against_float64=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("layout", ["csr", "atomic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_gate_and_edge_weight(layout, dtype):
    """EGNN's attention gate and edge weights in the Triton kernels: values and first derivatives."""
    h, edge_index, edge_attr, mlp = make_case(dtype, "cuda", 3000, 24, 32, 1, 64, 64)
    torch.manual_seed(3)
    gate = torch.nn.Sequential(torch.nn.Linear(64, 1), torch.nn.Sigmoid()).to("cuda", dtype)
    weight = torch.rand(edge_index.shape[1], device="cuda", dtype=dtype, requires_grad=True)
    kwargs = {"gate": gate, "edge_weight": weight}
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs)
    got = message_aggregate(h, edge_index, edge_attr, mlp, layout=layout, backend="triton", **kwargs)
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(got, expected, **tolerance)
    inputs = [h, edge_attr, weight, *mlp.parameters(), *gate.parameters()]
    grad = torch.randn_like(expected)
    for g, w in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad), strict=True):
        torch.testing.assert_close(g, w, **tolerance)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("layout", ["csr", "atomic"])
def test_cuda_bfloat16_forward(layout):
    """bfloat16 against the float32 reference of the same (rounded) inputs, relative to the largest value."""
    h, edge_index, edge_attr, mlp = make_case(torch.bfloat16, "cuda", 3000, 24, 32, 1, 128, 128)
    out = message_aggregate(h, edge_index, edge_attr, mlp, backend="triton", layout=layout)
    expected = message_aggregate_reference(h.float(), edge_index, edge_attr.float(), mlp.float())
    scale = expected.abs().max()
    torch.testing.assert_close(out.float() / scale, expected / scale, rtol=0, atol=2e-2)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["triton", "torch", "compile"])
def test_cuda_csr_bitwise_deterministic(backend):
    """CSR on CUDA: forward and every gradient bitwise identical across runs (no atomics anywhere)."""
    h, edge_index, edge_attr, mlp = make_case(torch.float32, "cuda", 20000, 30, 64, 1, 128, 128)
    csr = build_csr(edge_index, h.shape[0])
    runs = []
    for _ in range(3):
        out = message_aggregate(h, csr, edge_attr, mlp, backend=backend)
        grads = torch.autograd.grad(out.square().sum(), [h, edge_attr, *mlp.parameters()])
        runs.append([out, *grads])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "compile"])
@pytest.mark.parametrize("layout", ["csr", "atomic"])
def test_cuda_other_backends_parity(backend, layout):
    case = make_case(torch.float64, "cuda", 2000, 16, 16, 2, 32, 32)
    check_parity(*case, backend=backend, layout=layout, tolerance=TOLERANCES[torch.float64])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "out"), [(torch.float32, None), (torch.float32, 64), (torch.float64, 64)])
def test_cuda_input_gradients_by_the_backward_kernel(dtype, out):
    """Forces-style backward on CUDA (frozen MLP and gate: only node features, edge features and edge weights need
    gradients) runs the Triton backward kernel: equal to the reference, bitwise identical across runs."""
    h, edge_index, edge_attr, mlp = make_case(dtype, "cuda", 3000, 24, 32, 1, 64, out)
    width = out or 64
    torch.manual_seed(3)
    gate = torch.nn.Sequential(torch.nn.Linear(width, 1), torch.nn.Sigmoid()).to("cuda", dtype)
    for module in (mlp, gate):
        module.requires_grad_(False)
    weight = torch.rand(edge_index.shape[1], device="cuda", dtype=dtype, requires_grad=True)
    edge_attr.requires_grad_()
    kwargs = {"gate": gate, "edge_weight": weight}
    inputs = [h, edge_attr, weight]
    expected = message_aggregate_reference(h, edge_index, edge_attr, mlp, **kwargs)
    grad = torch.randn_like(expected)
    want = torch.autograd.grad(expected, inputs, grad)
    csr = build_csr(edge_index, h.shape[0])
    runs = [
        torch.autograd.grad(message_aggregate(h, csr, edge_attr, mlp, backend="triton", **kwargs), inputs, grad)
        for _ in range(2)
    ]
    for g, w in zip(runs[0], want, strict=True):
        torch.testing.assert_close(g, w, **TOLERANCES[dtype])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
