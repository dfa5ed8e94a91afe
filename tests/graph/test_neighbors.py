"""Neighbour lists: agreement with ASE, batches, max_neighbors, scale, bad input, gradients."""

from __future__ import annotations

import copy
from pathlib import Path

import ase
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list
from safetensors.torch import load_file

from zoo.graph import (
    AtomsGraph,
    GraphError,
    batch_graphs,
    edge_vectors,
    from_ase,
    neighbor_list,
    radius_graph,
    unbatch_graphs,
)

NO_PBC = torch.zeros(3, dtype=torch.bool)


def random_system(rng: np.random.Generator, kind: str) -> tuple[ase.Atoms, float]:
    """A random structure of the given kind and a cutoff (Å) for it."""
    n = int(rng.integers(1, 25))
    cutoff = float(rng.uniform(1.0, 5.0))
    if kind == "molecule":
        atoms = ase.Atoms(numbers=[6] * n, positions=rng.uniform(-3.0, 3.0, (n, 3)))
    elif kind == "molecule_in_box":
        atoms = ase.Atoms(numbers=[6] * n, positions=rng.uniform(0.0, 6.0, (n, 3)), cell=np.eye(3) * 6.0)
    elif kind == "cubic":
        length = float(rng.uniform(3.0, 8.0))
        atoms = ase.Atoms(numbers=[6] * n, cell=np.eye(3) * length, pbc=True)
        atoms.set_scaled_positions(rng.uniform(-0.2, 1.2, (n, 3)))
    elif kind == "triclinic":
        cell = np.diag(rng.uniform(3.0, 7.0, 3)) + np.triu(rng.uniform(-2.0, 2.0, (3, 3)), k=1)
        atoms = ase.Atoms(numbers=[6] * n, cell=cell @ _random_rotation(rng), pbc=True)
        atoms.set_scaled_positions(rng.uniform(0.0, 1.0, (n, 3)))
    elif kind == "slab":
        cell = np.array([[4.0, 0.0, 0.0], [1.5, 4.5, 0.0], [0.3, -0.2, 12.0]]) * rng.uniform(0.8, 1.2)
        atoms = ase.Atoms(numbers=[6] * n, cell=cell, pbc=[True, True, False])
        atoms.set_scaled_positions(rng.uniform(0.0, 1.0, (n, 3)) * [1.0, 1.0, 0.5])
    elif kind == "slab_zero_c":
        cell = np.array([[3.5, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
        positions = rng.uniform(0.0, 1.0, (n, 3)) * [3.5, 4.0, 6.0]
        atoms = ase.Atoms(numbers=[6] * n, positions=positions, cell=cell, pbc=[True, True, False])
    elif kind == "wire":
        cell = np.diag([10.0, 10.0, float(rng.uniform(1.5, 4.0))])
        atoms = ase.Atoms(numbers=[6] * n, cell=cell, pbc=[False, False, True])
        atoms.set_scaled_positions(rng.uniform(0.0, 1.0, (n, 3)))
    elif kind == "small_cell":
        # At least one cell vector is shorter than the cutoff: many periodic images, self-images included.
        n = int(rng.integers(1, 5))
        cutoff = float(rng.uniform(4.0, 6.0))
        cell = np.diag(rng.uniform(1.2, 3.0, 3)) + rng.uniform(-0.4, 0.4, (3, 3))
        atoms = ase.Atoms(numbers=[6] * n, cell=cell, pbc=rng.random(3) < 0.7)
        atoms.set_scaled_positions(rng.uniform(0.0, 1.0, (n, 3)))
    else:
        raise AssertionError(kind)
    return atoms, cutoff


KINDS = ["molecule", "molecule_in_box", "cubic", "triclinic", "slab", "slab_zero_c", "wire", "small_cell"]
SYSTEMS = [(kind, seed) for kind in KINDS for seed in range(8)]  # 64 systems


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def ase_pairs(atoms: ase.Atoms, cutoff: float) -> dict[tuple[int, int, tuple[int, ...]], float]:
    i, j, shift, distance = ase_neighbor_list("ijSd", atoms, cutoff)
    return {
        (int(a), int(b), tuple(int(s) for s in c)): float(d) for a, b, c, d in zip(i, j, shift, distance, strict=True)
    }


def zoo_pairs(graph: AtomsGraph) -> dict[tuple[int, int, tuple[int, ...]], float]:
    _, length = edge_vectors(graph)
    source, target = graph.edge_index.tolist()
    return {
        (i, j, tuple(shift)): float(d)
        for i, j, shift, d in zip(target, source, graph.edge_shift.tolist(), length.tolist(), strict=True)
    }


def assert_sorted_by_target_source_shift(graph: AtomsGraph) -> None:
    source, target = graph.edge_index.tolist()
    keys = [(i, j, *shift) for i, j, shift in zip(target, source, graph.edge_shift.tolist(), strict=True)]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(("kind", "seed"), SYSTEMS)
def test_agrees_with_ase(kind: str, seed: int) -> None:
    rng = np.random.default_rng([KINDS.index(kind), seed])
    atoms, cutoff = random_system(rng, kind)
    graph = radius_graph(from_ase(atoms, dtype=torch.float64), cutoff)
    expected = ase_pairs(atoms, cutoff)
    got = zoo_pairs(graph)
    assert got.keys() == expected.keys()
    for key, distance in expected.items():
        assert abs(got[key] - distance) < 1e-10, key
    assert_sorted_by_target_source_shift(graph)

    # edge_vectors gives ASE's vectors D = pos[j] - pos[i] + S @ cell, in ASE's order after sorting.
    i, j, shift, vectors = ase_neighbor_list("ijSD", atoms, cutoff)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    vec, _ = edge_vectors(graph)
    np.testing.assert_allclose(vec.numpy(), vectors[order], atol=1e-10, rtol=0)


def test_suite_covers_cells_shorter_than_cutoff() -> None:
    short = 0
    for seed in range(8):
        atoms, cutoff = random_system(np.random.default_rng([KINDS.index("small_cell"), seed]), "small_cell")
        heights = atoms.cell.volume / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
        short += bool((heights[atoms.pbc] < cutoff).any())
    assert short >= 6


def test_self_edge_excluded_periodic_self_images_included() -> None:
    atoms = ase.Atoms("Cu", cell=np.eye(3) * 2.0, pbc=True)
    graph = radius_graph(from_ase(atoms, dtype=torch.float64), 2.5)  # 6 images at 2.0, none at 2.83
    assert graph.edge_index.tolist() == [[0] * 6, [0] * 6]
    assert sorted(map(tuple, graph.edge_shift.tolist())) == sorted(
        [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    )
    assert (graph.edge_shift.abs().sum(dim=1) > 0).all()


def test_isolated_atom_has_no_edges() -> None:
    graph = radius_graph(AtomsGraph.build(torch.zeros(1, 3), torch.tensor([1])), 5.0)
    assert graph.edge_index.shape == (2, 0)
    assert graph.edge_shift.shape == (0, 3)
    assert graph.edge_index.dtype == graph.edge_shift.dtype == torch.long


def test_float32_positions_same_edges_as_float64() -> None:
    atoms, cutoff = random_system(np.random.default_rng(7), "triclinic")
    atoms.positions = atoms.positions.astype(np.float32).astype(np.float64)
    atoms.cell = atoms.cell.array.astype(np.float32).astype(np.float64)
    single = radius_graph(from_ase(atoms, dtype=torch.float32), cutoff)
    double = radius_graph(from_ase(atoms, dtype=torch.float64), cutoff)
    assert torch.equal(single.edge_index, double.edge_index)
    assert torch.equal(single.edge_shift, double.edge_shift)
    assert edge_vectors(single)[0].dtype == torch.float32


def mixed_graphs() -> list[AtomsGraph]:
    rng = np.random.default_rng(42)
    graphs = []
    for kind in ["molecule", "cubic", "slab", "triclinic", "molecule_in_box", "small_cell", "wire"]:
        atoms, _ = random_system(rng, kind)
        graphs.append(from_ase(atoms, dtype=torch.float64))
    return graphs


def test_batch_gives_each_graph_its_own_edges() -> None:
    graphs = mixed_graphs()
    batched = radius_graph(batch_graphs(graphs), 3.5)
    singles = [radius_graph(graph, 3.5) for graph in graphs]
    offsets = np.cumsum([0] + [graph.num_nodes for graph in graphs])
    expected_index = torch.cat([g.edge_index + int(o) for g, o in zip(singles, offsets, strict=False)], dim=1)
    expected_shift = torch.cat([g.edge_shift for g in singles])
    assert torch.equal(batched.edge_index, expected_index)
    assert torch.equal(batched.edge_shift, expected_shift)
    lengths = torch.cat([edge_vectors(g)[1] for g in singles])
    torch.testing.assert_close(edge_vectors(batched)[1], lengths, rtol=0, atol=1e-12)
    for single, part in zip(singles, unbatch_graphs(batched), strict=True):
        assert torch.equal(part.edge_index, single.edge_index)
        assert torch.equal(part.edge_shift, single.edge_shift)


def test_unsorted_batch_vector() -> None:
    batched = batch_graphs(mixed_graphs())
    reference = radius_graph(batched, 3.0)
    perm = torch.randperm(batched.num_nodes, generator=torch.Generator().manual_seed(0))
    edge_index, edge_shift = neighbor_list(batched.pos[perm], batched.cell, batched.pbc, 3.0, batch=batched.batch[perm])
    edges = {
        (int(perm[j]), int(perm[i]), *s) for (j, i), s in zip(edge_index.T.tolist(), edge_shift.tolist(), strict=True)
    }
    expected = {
        (j, i, *s) for (j, i), s in zip(reference.edge_index.T.tolist(), reference.edge_shift.tolist(), strict=True)
    }
    assert edges == expected


def test_max_neighbors_keeps_nearest_and_is_deterministic() -> None:
    atoms, _ = random_system(np.random.default_rng(3), "cubic")
    graph = from_ase(atoms, dtype=torch.float64)
    full = radius_graph(graph, 5.0)
    k = 4
    kept = radius_graph(graph, 5.0, max_neighbors=k)
    again = radius_graph(graph, 5.0, max_neighbors=k)
    assert torch.equal(kept.edge_index, again.edge_index) and torch.equal(kept.edge_shift, again.edge_shift)
    assert_sorted_by_target_source_shift(kept)

    full_pairs, kept_pairs = zoo_pairs(full), zoo_pairs(kept)
    assert kept_pairs.keys() <= full_pairs.keys()
    for target in range(graph.num_nodes):
        all_d = sorted(d for (i, _, _), d in full_pairs.items() if i == target)
        kept_d = sorted(d for (i, _, _), d in kept_pairs.items() if i == target)
        assert kept_d == all_d[:k]

    # Permuting the atoms permutes the result (no ties in a random structure).
    perm = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(1))
    edge_index, edge_shift = neighbor_list(graph.pos[perm], graph.cell, graph.pbc, 5.0, max_neighbors=k)
    permuted = {
        (int(perm[i]), int(perm[j]), tuple(s))
        for (j, i), s in zip(edge_index.T.tolist(), edge_shift.tolist(), strict=True)
    }
    assert permuted == set(kept_pairs)


def test_max_neighbors_tie_break_source_then_shift() -> None:
    # Simple cubic lattice, a = 1 Å, two atoms in a 2x1x1 cell: atom 0 has six neighbours at exactly 1 Å:
    # itself at shifts (0, ±1, 0), (0, 0, ±1) and atom 1 at shifts (0, 0, 0), (-1, 0, 0).
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    cell = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    pbc = torch.ones(3, dtype=torch.bool)

    def neighbours_of_0(k: int) -> list[tuple[int, tuple[int, ...]]]:
        edge_index, edge_shift = neighbor_list(pos, cell, pbc, 1.2, max_neighbors=k)
        return [(j, tuple(s)) for (j, i), s in zip(edge_index.T.tolist(), edge_shift.tolist(), strict=True) if i == 0]

    assert neighbours_of_0(6) == [
        (0, (0, -1, 0)),
        (0, (0, 0, -1)),
        (0, (0, 0, 1)),
        (0, (0, 1, 0)),
        (1, (-1, 0, 0)),
        (1, (0, 0, 0)),
    ]
    # Equal distances: smaller source index first, then the lexicographically smaller shift.
    assert neighbours_of_0(3) == [(0, (0, -1, 0)), (0, (0, 0, -1)), (0, (0, 0, 1))]
    assert neighbours_of_0(5) == [(0, (0, -1, 0)), (0, (0, 0, -1)), (0, (0, 0, 1)), (0, (0, 1, 0)), (1, (-1, 0, 0))]


def test_non_strict_max_neighbors_matches_fairchem() -> None:
    """fairchem's ``enforce_max_neighbors_strictly=False`` (OC22, OMat24): same edges as fairchem 1.10's
    ``radius_graph_pbc`` (tests/fixtures/fairchem/neighbors_oc22.safetensors, from
    scripts/golden/make_fairchem_omat_golden.py) for crystals with ties at the 20th neighbour and a
    structure whose shells are split by less than the 0.01 Å² tolerance; strict mode keeps exactly 20."""
    tensors = load_file(Path(__file__).resolve().parents[1] / "fixtures" / "fairchem" / "neighbors_oc22.safetensors")
    for structure in ("copper", "salt", "slab", "near_tie"):
        pos, cell, pbc = (tensors[f"{structure}.{key}"] for key in ("pos", "cell", "pbc"))
        edge_index, edge_shift = neighbor_list(pos, cell, pbc, 6.0, max_neighbors=20, strict_max_neighbors=False)
        ours = set(zip(*edge_index.tolist(), map(tuple, edge_shift.tolist()), strict=True))
        expected = tensors[f"{structure}.edge_index"], tensors[f"{structure}.edge_shift"]
        theirs = set(zip(*expected[0].tolist(), map(tuple, expected[1].tolist()), strict=True))
        assert ours == theirs, structure
        strict, _ = neighbor_list(pos, cell, pbc, 6.0, max_neighbors=20)
        assert torch.equal(torch.bincount(strict[1], minlength=pos.shape[0]), tensors[f"{structure}.strict_counts"])


def test_non_strict_max_neighbors_keeps_shells_whole() -> None:
    # fcc Cu: shells of 12, 6 and 24 neighbours. Non-strict keeps every neighbour within 0.01 Å² (squared
    # distances) of the (k+1)-th nearest, so whole shells; atoms with at most k neighbours keep all of them.
    atoms = bulk("Cu", "fcc", a=3.6)
    pos, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    pbc = torch.ones(3, dtype=torch.bool)

    def count(k: int, cutoff: float = 6.0) -> int:
        edge_index, _ = neighbor_list(pos, cell, pbc, cutoff, max_neighbors=k, strict_max_neighbors=False)
        return edge_index.shape[1]

    assert [count(k) for k in (5, 11, 12, 17, 18, 19)] == [12, 12, 18, 18, 42, 42]
    assert count(20, cutoff=4.0) == 18  # 18 neighbours within 4 Å: fewer than k + 1, all kept
    graph = radius_graph(from_ase(atoms), 6.0, max_neighbors=12, strict_max_neighbors=False)
    assert graph.edge_index.shape[1] == 18


def test_100k_atoms_linear_memory() -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((30, 30, 28))  # 100 800 atoms
    graph = radius_graph(from_ase(atoms), 3.0)  # first shell only: 12 neighbours at 2.55 Å
    n = len(atoms)
    assert n == 100_800
    assert graph.edge_index.shape == (2, 12 * n)
    assert torch.equal(torch.bincount(graph.edge_index[1], minlength=n), torch.full((n,), 12))
    _, length = edge_vectors(graph)
    torch.testing.assert_close(length, torch.full_like(length, 3.61 / 2**0.5))


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf"), "five"])
def test_bad_cutoff(cutoff: object) -> None:
    with pytest.raises(GraphError, match="cutoff must be"):
        neighbor_list(torch.zeros(2, 3), torch.zeros(3, 3), NO_PBC, cutoff)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_neighbors", [0, -3, 2.5, True])
def test_bad_max_neighbors(max_neighbors: object) -> None:
    with pytest.raises(GraphError, match="max_neighbors must be a positive integer"):
        neighbor_list(torch.rand(2, 3), torch.zeros(3, 3), NO_PBC, 2.0, max_neighbors=max_neighbors)  # type: ignore[arg-type]


def test_bad_positions() -> None:
    with pytest.raises(GraphError, match=r"pos must be floating point.*pos.double"):
        neighbor_list(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 3), NO_PBC, 2.0)
    with pytest.raises(GraphError, match=r"pos must be a tensor of shape \[N, 3\]"):
        neighbor_list(torch.zeros(2, 2), torch.zeros(3, 3), NO_PBC, 2.0)
    with pytest.raises(GraphError, match=r"NaN or inf at atoms \[1\]"):
        neighbor_list(torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]), torch.zeros(3, 3), NO_PBC, 2.0)
    with pytest.raises(GraphError, match="empty structure"):
        neighbor_list(torch.zeros(0, 3), torch.zeros(3, 3), NO_PBC, 2.0)


def test_overlapping_atoms() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(GraphError, match=r"atoms 1 and 2 .* overlap.*get_duplicate_atoms"):
        neighbor_list(pos, torch.zeros(3, 3), NO_PBC, 2.0)


def test_bad_cell_and_batch() -> None:
    pos = torch.rand(3, 3)
    with pytest.raises(GraphError, match=r"pbc is True along cell vector 2 .* zero"):
        neighbor_list(pos, torch.diag(torch.tensor([2.0, 2.0, 0.0])), torch.ones(3, dtype=torch.bool), 2.0)
    singular = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 2.0, 0.0]])
    with pytest.raises(GraphError, match="linearly dependent"):
        neighbor_list(pos, singular, torch.ones(3, dtype=torch.bool), 2.0)
    with pytest.raises(GraphError, match=r"cell must have shape \[B, 3, 3\]"):
        neighbor_list(pos, torch.zeros(3), NO_PBC, 2.0)
    with pytest.raises(GraphError, match="pbc must be a bool tensor"):
        neighbor_list(pos, torch.zeros(3, 3), torch.zeros(3), 2.0)
    with pytest.raises(GraphError, match="no batch vector"):
        neighbor_list(pos, torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.bool), 2.0)
    with pytest.raises(GraphError, match=r"outside 0\.\.1"):
        neighbor_list(
            pos, torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.bool), 2.0, batch=torch.tensor([0, 1, 2])
        )


def test_edge_vectors_needs_edges() -> None:
    with pytest.raises(GraphError, match="radius_graph"):
        edge_vectors(AtomsGraph.build(torch.zeros(1, 3), torch.tensor([1])))


def with_fields(graph: AtomsGraph, **fields: torch.Tensor) -> AtomsGraph:
    out = copy.copy(graph)
    for name, value in fields.items():
        out[name] = value
    return out


def periodic_graph() -> AtomsGraph:
    atoms, _ = random_system(np.random.default_rng(11), "triclinic")
    return radius_graph(from_ase(atoms, dtype=torch.float64), 3.5)


def test_edge_vectors_gradient_wrt_positions() -> None:
    graph = periodic_graph()
    assert (graph.edge_shift != 0).any()
    pos = graph.pos.clone().requires_grad_(True)

    def lengths(p: torch.Tensor) -> torch.Tensor:
        return edge_vectors(with_fields(graph, pos=p))[1]

    assert torch.autograd.gradcheck(lengths, (pos,))


def test_edge_vectors_gradient_wrt_cell() -> None:
    graph = periodic_graph()
    cell = graph.cell.clone().requires_grad_(True)

    def lengths(c: torch.Tensor) -> torch.Tensor:
        return edge_vectors(with_fields(graph, cell=c))[1]

    assert torch.autograd.gradcheck(lengths, (cell,))


def test_edge_vectors_gradient_batched_strain() -> None:
    # d(sum of lengths)/d(strain) through pos and cell together, as for a stress, in a batch.
    batch = radius_graph(batch_graphs(mixed_graphs()[1:4]), 3.0)
    strain = torch.zeros(batch.num_graphs, 3, 3, dtype=torch.float64, requires_grad=True)

    def total_length(eps: torch.Tensor) -> torch.Tensor:
        deformation = torch.eye(3, dtype=torch.float64) + eps
        pos = torch.einsum("ni,nij->nj", batch.pos, deformation[batch.batch])
        cell = batch.cell @ deformation
        return edge_vectors(with_fields(batch, pos=pos, cell=cell))[1].sum()

    assert torch.autograd.gradcheck(total_length, (strain,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    graphs = mixed_graphs()
    graphs.append(from_ase(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((12, 12, 12)), dtype=torch.float64))
    batched = batch_graphs(graphs)
    cpu = radius_graph(batched, 3.5)
    cpu_k = radius_graph(batched, 3.5, max_neighbors=6)
    on_gpu = batch_graphs(graphs).to("cuda")  # PyG's Data.to moves in place
    gpu = radius_graph(on_gpu, 3.5)
    gpu_k = radius_graph(on_gpu, 3.5, max_neighbors=6)
    assert gpu.edge_index.is_cuda and gpu.edge_shift.is_cuda
    assert torch.equal(gpu.edge_index.cpu(), cpu.edge_index)
    assert torch.equal(gpu.edge_shift.cpu(), cpu.edge_shift)
    assert torch.equal(gpu_k.edge_index.cpu(), cpu_k.edge_index)
    assert torch.equal(gpu_k.edge_shift.cpu(), cpu_k.edge_shift)
    torch.testing.assert_close(edge_vectors(gpu)[1].cpu(), edge_vectors(cpu)[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dense_cell_beyond_vesin_capacity() -> None:
    # ~270 images of one atom within 6 Å: more than vesin's CUDA buffers hold per atom (216 at this cutoff).
    dense = from_ase(ase.Atoms("Cu", cell=np.eye(3) * 1.5, pbc=True), dtype=torch.float64)
    graphs = [dense, mixed_graphs()[0]]
    cpu = radius_graph(batch_graphs(graphs), 6.0)
    gpu = radius_graph(batch_graphs(graphs).to("cuda"), 6.0)
    assert gpu.edge_index.is_cuda
    assert torch.equal(gpu.edge_index.cpu(), cpu.edge_index)
    assert torch.equal(gpu.edge_shift.cpu(), cpu.edge_shift)
