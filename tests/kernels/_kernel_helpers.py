"""Helpers shared by the zoo.kernels tests: small random graphs, edge MLPs, tolerances, parity checks."""

from __future__ import annotations

import copy

import torch
from torch import nn

from zoo.kernels import message_aggregate, message_aggregate_reference

TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-10},
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
}


def random_graph(num_nodes: int, degree: int, *, isolated: int = 0, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """``[2, E]`` edges sorted by target; the last ``isolated`` nodes have no edges at all, and node 0 has no
    incoming edge (it still sends)."""
    generator = torch.Generator().manual_seed(seed)
    connected = num_nodes - isolated
    num_edges = connected * degree
    target = torch.randint(1, connected, (num_edges,), generator=generator)
    source = torch.randint(0, connected, (num_edges,), generator=generator)
    edge_index = torch.stack([source, target])
    return edge_index[:, torch.argsort(target, stable=True)].to(device)


def edge_mlp(
    node_dim: int, edge_dim: int, hidden: int, out: int | None, act: type[nn.Module] = nn.SiLU
) -> nn.Sequential:
    """``Sequential(Linear(2F + D, H), act[, Linear(H, out), act])`` in float64."""
    torch.manual_seed(1)
    layers: list[nn.Module] = [nn.Linear(2 * node_dim + edge_dim, hidden), act()]
    if out is not None:
        layers += [nn.Linear(hidden, out), act()]
    return nn.Sequential(*layers).double()


def make_case(dtype, device, num_nodes, degree, node_dim, edge_dim, hidden, out, act=nn.SiLU, seed=0):
    """``(h, edge_index, edge_attr, mlp)`` with ``h`` and ``edge_attr`` requiring gradients."""
    edge_index = random_graph(num_nodes, degree, isolated=2, seed=seed, device=device)
    generator = torch.Generator().manual_seed(seed + 1)
    h = torch.randn(num_nodes, node_dim, generator=generator).to(device, dtype).requires_grad_()
    edge_attr = None
    if edge_dim:
        edge_attr = torch.randn(edge_index.shape[1], edge_dim, generator=generator).to(device, dtype)
        edge_attr.requires_grad_()
    return h, edge_index, edge_attr, edge_mlp(node_dim, edge_dim, hidden, out, act).to(device, dtype)


def _values_and_grads(h, edge_index, edge_attr, mlp, grad, **kwargs) -> list[torch.Tensor]:
    """``[out, d<out, grad>/dh, d/dedge_attr, d/dweights...]`` of :func:`message_aggregate` or the reference."""
    backend = kwargs.pop("backend")
    if backend == "reference":
        out = message_aggregate_reference(h, edge_index, edge_attr, mlp, reduce=kwargs["reduce"])
    else:
        out = message_aggregate(h, edge_index, edge_attr, mlp, backend=backend, **kwargs)
    inputs = [h, *([] if edge_attr is None else [edge_attr]), *mlp.parameters()]
    return [out, *torch.autograd.grad(out, inputs, grad)]


def check_parity(
    h, edge_index, edge_attr, mlp, *, backend, layout="csr", reduce="sum", tolerance=None, against_float64=False
) -> None:
    """Values and first derivatives (w.r.t. h, edge_attr and every weight) against the reference.

    ``against_float64``: instead of a fixed tolerance, the error of each tensor w.r.t. the float64 reference
    may be at most 4x that of the reference computed in ``h``'s dtype (plus 1e-6 of its largest value): for
    float32 sums over many edges, where the reference's own rounding sets the scale.
    """
    width = mlp[-2].out_features
    grad = torch.linspace(-1, 1, h.shape[0] * width, dtype=h.dtype, device=h.device).view(h.shape[0], width)
    got = _values_and_grads(h, edge_index, edge_attr, mlp, grad, backend=backend, layout=layout, reduce=reduce)
    want = _values_and_grads(h, edge_index, edge_attr, mlp, grad, backend="reference", reduce=reduce)
    assert got[0].dtype == h.dtype and got[0].shape == want[0].shape
    if not against_float64:
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **(tolerance or TOLERANCES[h.dtype]))
        return
    h64 = h.detach().double().requires_grad_()
    edge_attr64 = None if edge_attr is None else edge_attr.detach().double().requires_grad_()
    exact = _values_and_grads(
        h64, edge_index, edge_attr64, copy.deepcopy(mlp).double(), grad.double(), backend="reference", reduce=reduce
    )
    for index, (g, w, e) in enumerate(zip(got, want, exact, strict=True)):
        error, reference_error = (g.double() - e).abs().max(), (w.double() - e).abs().max()
        bound = 4 * reference_error + 1e-6 * e.abs().max()
        assert error <= bound, (
            f"tensor {index}: error {error:.3g} > {bound:.3g} (reference error {reference_error:.3g})"
        )


def force_loss(backend, mlp, h, pos, edge_index, layout="csr") -> torch.Tensor:
    """Training on forces: e_ij = |x_i - x_j|^2, E = sum(out * c), F = -dE/dpos (create_graph), loss = |F|^2."""
    source, target = edge_index
    edge_attr = (pos[target] - pos[source]).pow(2).sum(-1, keepdim=True)
    if backend == "reference":
        out = message_aggregate_reference(h, edge_index, edge_attr, mlp)
    else:
        out = message_aggregate(h, edge_index, edge_attr, mlp, backend=backend, layout=layout)
    energy = (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype, device=out.device)).sum()
    (forces,) = torch.autograd.grad(-energy, pos, create_graph=True)
    return forces.square().sum()


def so2_case(dtype, device, num_nodes=9, num_edges=31, coefficients=16, rows=11, channels=6, *, sorted_index=False):
    """``(x [N, K, C], wigner_in [E, R, K], message [E, R, C], wigner_out [E, K, R], index [E])`` for the SO(2)
    rotation kernels; features and matrices require gradients; the last node has no edges."""
    generator = torch.Generator().manual_seed(5)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype).requires_grad_()

    index = torch.randint(0, num_nodes - 1, (num_edges,), generator=generator)
    if sorted_index:
        index = index.sort().values
    return (
        rand(num_nodes, coefficients, channels),
        rand(num_edges, rows, coefficients),
        rand(num_edges, rows, channels),
        rand(num_edges, coefficients, rows),
        index.to(device),
    )


def check_so2_parity(backend, dtype, device="cpu", *, sorted_index=False, tolerance=None) -> None:
    """gather_rotate and rotate_back_sum against ``bmm`` + ``index_add_``: values and first derivatives w.r.t.
    features and matrices, with a non-uniform output gradient."""
    from zoo.kernels import gather_rotate, rotate_back_sum

    x, wigner_in, message, wigner_out, index = so2_case(dtype, device, sorted_index=sorted_index)
    tolerance = tolerance or TOLERANCES[dtype]
    num_nodes = x.shape[0]

    def both(fused: bool):
        if fused:
            rotated = gather_rotate(x, wigner_in, index, backend=backend)
            summed = rotate_back_sum(message, wigner_out, index, num_nodes, backend=backend)
        else:
            rotated = wigner_in @ x[index]
            summed = torch.zeros_like(x).index_add(0, index, wigner_out @ message)
        loss = (rotated * torch.linspace(-1, 1, rotated.numel(), dtype=dtype, device=device).view_as(rotated)).sum()
        loss = loss + (summed * torch.linspace(1, -2, summed.numel(), dtype=dtype, device=device).view_as(summed)).sum()
        return [rotated, summed, *torch.autograd.grad(loss, [x, wigner_in, message, wigner_out])]

    for got, want in zip(both(True), both(False), strict=True):
        torch.testing.assert_close(got, want, **tolerance)
