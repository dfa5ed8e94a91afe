"""Edge chunking: chunks of whole target ranges, chunked sums equal to one-shot sums (values and gradients),
per-target softmax inside chunks, checkpointed chunks keep no activations, EGCL chunked == unchunked."""

from __future__ import annotations

import itertools

import pytest
import torch
from ase.build import bulk

import zoo
from zoo.graph import from_ase, radius_graph
from zoo.models.egnn import EGCL, complete_edge_index
from zoo.nn import segment_softmax
from zoo.nn.chunking import chunked_scatter_sum, edge_chunk_size, edge_chunks, supports_edge_chunks

# in-degrees with empty nodes at both ends and in the middle, and a hub of 9 edges
DEGREES = [0, 3, 1, 0, 4, 2, 9, 0, 1, 5, 2, 0]


def sorted_edges(degrees=DEGREES, seed: int = 0) -> torch.Tensor:
    """Receiver-sorted ``[2, E]`` edges with the given in-degrees and random sources."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.repeat_interleave(torch.arange(len(degrees)), torch.tensor(degrees))
    source = torch.randint(0, len(degrees), target.shape, generator=generator)
    return torch.stack([source, target])


def reference_sum(messages: torch.Tensor, target: torch.Tensor, num_nodes: int) -> torch.Tensor:
    return messages.new_zeros(num_nodes, *messages.shape[1:]).index_add_(0, target, messages)


@pytest.mark.parametrize("max_edges", [1, 2, 3, 4, 5, 8, 13, 1000])
def test_chunks_partition_nodes_and_edges_at_node_boundaries(max_edges):
    edge_index = sorted_edges()
    num_nodes, degree = len(DEGREES), torch.tensor(DEGREES)
    chunks = edge_chunks(edge_index, num_nodes, max_edges)
    assert chunks[0].nodes.start == 0 and chunks[-1].nodes.stop == num_nodes
    assert chunks[0].edges.start == 0 and chunks[-1].edges.stop == edge_index.shape[1]
    for before, after in itertools.pairwise(chunks):
        assert before.nodes.stop == after.nodes.start and before.edges.stop == after.edges.start
        # greedy: the next node's edges would not have fitted (that is why the chunk ends mid-budget)
        assert before.num_edges + int(degree[after.nodes.start]) > max_edges
    for chunk in chunks:
        torch.testing.assert_close(chunk.edge_index, edge_index[:, chunk.edges])
        assert chunk.num_edges == int(degree[chunk.nodes].sum())  # every incoming edge of its nodes
        assert bool((chunk.target >= 0).all()) and bool((chunk.target < chunk.num_nodes).all())
        # at most max_edges, unless the chunk is one node with more edges than that
        assert chunk.num_edges <= max_edges or (chunk.num_nodes == 1 and chunk.num_edges > max_edges)
    if max_edges < 9:
        assert any(chunk.num_edges == 9 and chunk.num_nodes == 1 for chunk in chunks)  # the hub, unsplit
    if max_edges == 1000:
        assert len(chunks) == 1


def test_unsorted_edges_are_grouped_by_target():
    edge_index = sorted_edges()
    shuffled = edge_index[:, torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(1))]
    chunks = edge_chunks(shuffled, len(DEGREES), 5)
    ids = torch.cat([chunk.edges for chunk in chunks])
    assert sorted(ids.tolist()) == list(range(shuffled.shape[1]))
    for chunk in chunks:
        targets = shuffled[1, chunk.edges]
        assert bool((targets >= chunk.nodes.start).all()) and bool((targets < chunk.nodes.stop).all())
    messages = torch.randn(shuffled.shape[1], 3, dtype=torch.float64)
    out = chunked_scatter_sum(lambda chunk: messages[chunk.edges], shuffled, len(DEGREES), 5)
    torch.testing.assert_close(out, reference_sum(messages, shuffled[1], len(DEGREES)), rtol=0, atol=1e-14)


def test_graphs_without_edges_or_nodes():
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    (chunk,) = edge_chunks(no_edges, 4, 3)
    assert chunk.nodes == slice(0, 4) and chunk.num_edges == 0
    out = chunked_scatter_sum(lambda chunk: torch.ones(chunk.num_edges, 2), no_edges, 4, 3)
    assert out.shape == (4, 2) and not bool(out.any())
    assert edge_chunks(no_edges, 0, 3) == []
    assert chunked_scatter_sum(lambda chunk: torch.ones(chunk.num_edges, 2), no_edges, 0, 3).shape == (0, 2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_chunk_size(bad):
    with pytest.raises(ValueError, match="max_edges must be a positive integer"):
        edge_chunks(sorted_edges(), len(DEGREES), bad)


def test_targets_out_of_range():
    with pytest.raises(ValueError, match=r"edge targets must lie in 0\.\.4"):
        edge_chunks(sorted_edges(), 5, 3)


def mlp_messages(x: torch.Tensor, weight: torch.Tensor, edge_attr: torch.Tensor):
    """A nonlinear message of both end points and an edge attribute, and a second output."""

    def message_fn(chunk):
        source, target = chunk.edge_index
        hidden = torch.tanh(torch.cat([x[source], x[target], edge_attr[chunk.edges]], dim=1) @ weight)
        return hidden, (hidden**2).sum(1, keepdim=True) * edge_attr[chunk.edges]

    return message_fn


@pytest.mark.parametrize("checkpoint", [True, False])
@pytest.mark.parametrize("max_edges", [1, 3, 7, 100])
def test_chunked_sums_and_gradients_equal_one_shot(max_edges, checkpoint):
    torch.manual_seed(0)
    edge_index, num_nodes = sorted_edges(), len(DEGREES)
    x = torch.randn(num_nodes, 4, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(edge_index.shape[1], 1, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    message_fn = mlp_messages(x, weight, edge_attr)
    all_edges = edge_chunks(edge_index, num_nodes, edge_index.shape[1])[0]
    expected = [reference_sum(m, edge_index[1], num_nodes) for m in message_fn(all_edges)]
    actual = chunked_scatter_sum(message_fn, edge_index, num_nodes, max_edges, checkpoint=checkpoint)
    assert isinstance(actual, tuple) and len(actual) == 2
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)

    def loss(outputs):
        return (outputs[0] ** 3).sum() + (outputs[1] * torch.arange(num_nodes)[:, None]).sum()

    inputs = (x, edge_attr, weight)
    grads = torch.autograd.grad(loss(actual), inputs, create_graph=True)
    grads_expected = torch.autograd.grad(loss(expected), inputs, create_graph=True)
    for a, e in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)
    # second derivatives (training on forces differentiates a gradient again)
    second = torch.autograd.grad(grads[0].pow(2).sum(), (x, weight))
    second_expected = torch.autograd.grad(grads_expected[0].pow(2).sum(), (x, weight))
    for a, e in zip(second, second_expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("max_edges", [1, 4, 6])
def test_per_target_softmax_inside_a_chunk_is_exact(max_edges):
    """A node's edges are never split, so a softmax over each target's edges can run per chunk (EquiformerV2)."""
    edge_index, num_nodes = sorted_edges(), len(DEGREES)
    logits = torch.randn(edge_index.shape[1], 2, dtype=torch.float64)
    values = torch.randn(edge_index.shape[1], 2, dtype=torch.float64)

    def attention(chunk):
        return segment_softmax(logits[chunk.edges], chunk.target, chunk.num_nodes) * values[chunk.edges]

    expected = reference_sum(segment_softmax(logits, edge_index[1], num_nodes) * values, edge_index[1], num_nodes)
    actual = chunked_scatter_sum(attention, edge_index, num_nodes, max_edges)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-14)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while running ``fn``."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return total


def test_checkpointed_chunks_keep_no_edge_activations():
    torch.manual_seed(0)
    edge_index, num_nodes = sorted_edges(degrees=[40] * 50), 50
    x = torch.randn(num_nodes, 16, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(edge_index.shape[1], 1, dtype=torch.float64)
    weight = torch.randn(33, 64, dtype=torch.float64, requires_grad=True)
    message_fn = mlp_messages(x, weight, edge_attr)
    kept = saved_bytes(lambda: chunked_scatter_sum(message_fn, edge_index, num_nodes, 2000, checkpoint=False))
    chunked = saved_bytes(lambda: chunked_scatter_sum(message_fn, edge_index, num_nodes, 200))
    assert chunked < 0.05 * kept, (chunked, kept)


EGCL_CONFIGS = {
    "coords-mean": {"attention": True, "coords_agg": "mean"},
    "coords-sum-tanh-norm": {"coords_agg": "sum", "tanh": True, "norm_diff": True, "coords_weight": 0.7},
    "velocity-edge-attr": {"velocity": True, "residual": False},
    "invariant": {"update_coords": False, "attention": True},
}


@pytest.mark.parametrize("config", list(EGCL_CONFIGS))
@pytest.mark.parametrize("max_edges", [1, 3, 10])
def test_egcl_chunked_equals_unchunked(config, max_edges):
    torch.manual_seed(0)
    options = EGCL_CONFIGS[config]
    edges_in_d = 2 if options.get("velocity") else 0
    layer = EGCL(6, 6, 12, edges_in_d, 3, **options).double()
    batch = torch.tensor([0] * 5 + [1] * 4)
    edge_index = complete_edge_index(batch)
    num_nodes, num_edges = batch.shape[0], edge_index.shape[1]
    h = torch.randn(num_nodes, 6, dtype=torch.float64, requires_grad=True)
    coord = torch.randn(num_nodes, 3, dtype=torch.float64, requires_grad=True)
    kwargs = {
        "node_attr": torch.randn(num_nodes, 3, dtype=torch.float64),
        "edge_weight": torch.rand(num_edges, dtype=torch.float64),
        "edge_offset": 0.1 * torch.randn(num_edges, 3, dtype=torch.float64),
    }
    if edges_in_d:
        kwargs |= {"vel": torch.randn(num_nodes, 3, dtype=torch.float64)}
        kwargs |= {"edge_attr": torch.randn(num_edges, 2, dtype=torch.float64)}

    def run(chunk_size):
        layer.edge_chunk_size = chunk_size
        h_out, x_out = layer(h, edge_index, coord, **kwargs)
        loss = (h_out**2).sum() + (x_out**3).sum()
        return (h_out, x_out, *torch.autograd.grad(loss, [h, coord, *layer.parameters()]))

    for actual, expected in zip(run(max_edges), run(None), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


def test_egnn_potential_chunked_forward_keeps_few_tensors_for_forces():
    """What the forward pass keeps for the backward pass of the forces: with chunks, the per-edge activations of
    the layers are not kept (the benchmark measures peaks: benchmarks/chunked_memory.py)."""
    torch.manual_seed(0)
    model = zoo.create_model("egnn-potential", hidden_nf=32, n_layers=2, cutoff=4.0, elements=[29]).double()
    graph = radius_graph(from_ase(bulk("Cu", "fcc", a=3.61).repeat(4), dtype=torch.float64), 4.0)  # 64 atoms
    graph.pos.requires_grad_(True)
    kept = saved_bytes(lambda: model.atom_energies(graph))
    with edge_chunk_size(model, 64):
        chunked = saved_bytes(lambda: model.atom_energies(graph))
    assert chunked < 0.2 * kept, (chunked, kept)


def test_edge_chunk_size_sets_and_restores():
    model = zoo.create_model("egnn-potential", hidden_nf=8, n_layers=2)
    assert supports_edge_chunks(model)
    model.set_edge_chunk_size(500)
    with edge_chunk_size(model, 7):
        assert model.edge_chunk_size == 7 and all(layer.edge_chunk_size == 7 for layer in model.layers())
    assert model.edge_chunk_size == 500 and all(layer.edge_chunk_size == 500 for layer in model.layers())
    with pytest.raises(ValueError, match="positive integer"):
        model.set_edge_chunk_size(0)
    with (
        pytest.raises(TypeError, match="Linear cannot process its edges in chunks"),
        edge_chunk_size(torch.nn.Linear(2, 2), 10),
    ):
        pass
