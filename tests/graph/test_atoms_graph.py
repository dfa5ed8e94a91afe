"""AtomsGraph.build validation and batching through PyG."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from zoo.graph import (
    AtomsGraph,
    GraphError,
    batch_graphs,
    node_graph_index,
    num_graphs,
    radius_graph,
    unbatch_graphs,
)

WATER = torch.tensor([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])


def periodic_graph(n: int = 4, seed: int = 0, **fields) -> AtomsGraph:
    generator = torch.Generator().manual_seed(seed)
    cell = torch.tensor([[3.0, 0.0, 0.0], [0.5, 3.2, 0.0], [0.2, 0.3, 3.5]], dtype=torch.float64)
    pos = torch.rand(n, 3, generator=generator, dtype=torch.float64) @ cell
    return AtomsGraph.build(pos, torch.full((n,), 14), cell=cell, pbc=True, **fields)


def test_build_defaults_molecule() -> None:
    graph = AtomsGraph.build(WATER, [8, 1, 1])
    assert graph.pos.dtype == torch.float32
    assert graph.z.dtype == torch.long and graph.z.tolist() == [8, 1, 1]
    assert torch.equal(graph.cell, torch.zeros(1, 3, 3))
    assert graph.pbc.tolist() == [[False, False, False]]
    assert graph.natoms.tolist() == [3]
    assert graph.num_nodes == 3
    assert num_graphs(graph) == 1
    assert torch.equal(node_graph_index(graph), torch.zeros(3, dtype=torch.long))


def test_build_keeps_float64_and_casts_cell_and_fields() -> None:
    graph = AtomsGraph.build(
        WATER.double(),
        torch.tensor([8, 1, 1], dtype=torch.int32),
        cell=torch.eye(3) * 10.0,
        pbc=[True, True, False],
        forces=torch.zeros(3, 3),
        energy=-14.2,
        stress=torch.eye(3),
        charge=0,
        spin=1.0,
        tags=[0, 1, 2],
        fixed=torch.tensor([True, False, False]),
        vel=torch.ones(3, 3),
        label="water",
    )
    assert graph.pos.dtype == graph.cell.dtype == graph.forces.dtype == graph.energy.dtype == torch.float64
    assert graph.stress.dtype == graph.vel.dtype == torch.float64
    assert graph.z.dtype == torch.long
    assert graph.cell.shape == (1, 3, 3) and graph.stress.shape == (1, 3, 3)
    assert graph.pbc.tolist() == [[True, True, False]]
    assert graph.energy.shape == (1,) and graph.charge.tolist() == [0] and graph.spin.tolist() == [1]
    assert graph.charge.dtype == graph.spin.dtype == graph.tags.dtype == torch.long
    assert graph.label == "water"


def test_point_cloud_with_features() -> None:
    graph = AtomsGraph.build(torch.rand(5, 3), x=torch.rand(5, 2))
    assert "z" not in graph and graph.x.shape == (5, 2)


def test_slab_with_zero_non_periodic_vector_is_valid() -> None:
    cell = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    graph = AtomsGraph.build(torch.rand(2, 3), [6, 6], cell=cell, pbc=[True, True, False])
    assert graph.pbc.tolist() == [[True, True, False]]


@pytest.mark.parametrize(
    ("pos", "z", "kwargs", "match"),
    [
        ([[0.0, 0.0, float("nan")], [0.0, 0.0, 1.0]], [1, 1], {}, r"NaN or inf at atoms \[0\]"),
        ([[0.0, 0.0, 0.0], [float("inf"), 0.0, 1.0]], [1, 1], {}, r"NaN or inf at atoms \[1\]"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), {}, "empty structure"),
        ([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [0, 1], {}, r"unknown element: atomic numbers \[0\] at atoms \[0\]"),
        ([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [1, 200], {}, r"unknown element: atomic numbers \[200\]"),
        (torch.zeros(2, 3, dtype=torch.long), [1, 1], {}, r"float32 or float64.*pos\.double\(\)"),
        (torch.zeros(2, 3, dtype=torch.float16), [1, 1], {}, "float32 or float64"),
        (torch.zeros(2, 2), [1, 1], {}, r"pos must have shape \[N, 3\]"),
        (torch.zeros(2, 3), [1, 1, 1], {}, r"z must have shape \[N\] = \[2\]"),
        (torch.zeros(2, 3), [1.0, 1.0], {}, r"integer atomic numbers.*z\.long\(\)"),
        (torch.zeros(2, 3), None, {"x": torch.zeros(2)}, r"x must have shape \[N, F\]"),
        (torch.zeros(2, 3), [1, 1], {"cell": torch.eye(2)}, r"cell must have shape \[3, 3\]"),
        (torch.zeros(2, 3), [1, 1], {"cell": torch.full((3, 3), float("nan"))}, "cell contains NaN"),
        (torch.zeros(2, 3), [1, 1], {"pbc": [1, 1, 1]}, "pbc must be boolean"),
        (torch.zeros(2, 3), [1, 1], {"pbc": [True, True]}, "pbc must be a bool or have shape"),
        (torch.zeros(2, 3), [1, 1], {"pbc": True}, r"pbc is True along cell vector 0 .* zero.*pbc\[0\] = False"),
        (
            torch.zeros(2, 3),
            [1, 1],
            {"cell": torch.diag(torch.tensor([2.0, 2.0, 0.0])), "pbc": True},
            "along cell vector 2",
        ),
        (
            torch.zeros(2, 3),
            [1, 1],
            {"cell": torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 0]]), "pbc": True},
            "linearly dependent",
        ),
        (
            torch.zeros(2, 3),
            [1, 1],
            {"cell": torch.tensor([[2.0, 0, 0], [4.0, 0, 0], [0, 0, 1.0]]), "pbc": [True, True, False]},
            "linearly dependent",
        ),
        (torch.zeros(2, 3), [1, 1], {"forces": torch.zeros(2, 2)}, r"forces must have shape \[2, 3\]"),
        (torch.zeros(2, 3), [1, 1], {"charge": 0.5}, "charge must hold integers"),
        (torch.zeros(2, 3), [1, 1], {"fixed": [0, 1]}, r"fixed must be boolean.*\.bool\(\)"),
        (torch.zeros(2, 3), [1, 1], {"edge_index": torch.zeros(2, 0, dtype=torch.long)}, "come together"),
        (
            torch.zeros(2, 3),
            [1, 1],
            {"edge_index": torch.tensor([[0], [5]]), "edge_shift": torch.zeros(1, 3, dtype=torch.long)},
            "outside 0..1",
        ),
        ("not a tensor", [1], {}, "cannot be converted to a tensor"),
    ],
)
def test_build_rejects(pos, z, kwargs, match: str) -> None:
    with pytest.raises(GraphError, match=match):
        AtomsGraph.build(torch.as_tensor(pos) if not isinstance(pos, str) else pos, z, **kwargs)


def test_graph_error_is_value_error() -> None:
    assert issubclass(GraphError, ValueError)


def test_pyg_batching_increments_edge_index_keeps_edge_shift() -> None:
    graphs = [
        radius_graph(periodic_graph(3, seed=0, energy=1.0, stress=torch.eye(3)), 2.5),
        radius_graph(AtomsGraph.build(WATER.double(), [8, 1, 1], energy=2.0, stress=torch.zeros(3, 3)), 2.0),
        radius_graph(periodic_graph(5, seed=1, energy=3.0, stress=torch.eye(3)), 2.5),
    ]
    batch = Batch.from_data_list(graphs)  # PyG directly, default __inc__ / __cat_dim__
    offsets = [0, 3, 6]
    assert torch.equal(
        batch.edge_index, torch.cat([g.edge_index + o for g, o in zip(graphs, offsets, strict=True)], dim=1)
    )
    assert torch.equal(batch.edge_shift, torch.cat([g.edge_shift for g in graphs]))
    assert batch.cell.shape == (3, 3, 3) and batch.pbc.shape == (3, 3) and batch.stress.shape == (3, 3, 3)
    assert batch.natoms.tolist() == [3, 3, 5]
    assert batch.energy.tolist() == [1.0, 2.0, 3.0]
    assert batch.batch.tolist() == [0] * 3 + [1] * 3 + [2] * 5
    assert isinstance(batch, AtomsGraph)
    assert num_graphs(batch) == 3
    assert torch.equal(node_graph_index(batch), batch.batch)

    for original, part in zip(graphs, unbatch_graphs(batch), strict=True):
        assert isinstance(part, AtomsGraph)
        assert set(part.keys()) == set(original.keys())
        for key in original.keys():
            assert torch.equal(part[key], original[key]), key


def test_batch_graphs_and_unbatch() -> None:
    graphs = [periodic_graph(2, seed=s) for s in range(4)]
    batch = batch_graphs(graphs)
    assert isinstance(batch, Batch) and batch.num_graphs == 4
    parts = unbatch_graphs(batch)
    assert len(parts) == 4 and all(torch.equal(p.pos, g.pos) for p, g in zip(parts, graphs, strict=True))
    single = graphs[0]
    assert unbatch_graphs(single) == [single]


def test_radius_graph_on_batch_then_unbatch() -> None:
    graphs = [periodic_graph(3, seed=0), AtomsGraph.build(WATER.double(), [8, 1, 1]), periodic_graph(4, seed=2)]
    batched = radius_graph(batch_graphs(graphs), 2.5)
    for graph, part in zip(graphs, unbatch_graphs(batched), strict=True):
        alone = radius_graph(graph, 2.5)
        assert torch.equal(part.edge_index, alone.edge_index)
        assert torch.equal(part.edge_shift, alone.edge_shift)
    # The input batch is untouched (radius_graph returns a shallow copy).
    assert "edge_index" not in batch_graphs(graphs)


def test_radius_graph_does_not_modify_input() -> None:
    graph = periodic_graph()
    out = radius_graph(graph, 2.5)
    assert "edge_index" in out and "edge_index" not in graph
    assert out.pos is graph.pos


def test_batch_graphs_errors() -> None:
    with pytest.raises(GraphError, match="empty list"):
        batch_graphs([])
    with_edges = radius_graph(periodic_graph(), 2.5)
    with pytest.raises(GraphError, match=r"differ: \['edge_index', 'edge_shift'\].*radius_graph"):
        batch_graphs([with_edges, periodic_graph()])
