"""Edge chunking for large systems: chunked == unchunked energies, forces and stress (float64, many chunks, a
node with more edges than the chunk), the calculator and predict option, the warning for models that cannot
chunk, and a loose check that the peak of live tensor memory is lower."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from chunk_systems import SYSTEMS, molecular, periodic, slab

import zoo
import zoo.models.egnn
from zoo.graph import from_ase, radius_graph
from zoo.nn.chunking import edge_chunks

ELEMENTS = [1, 6, 8, 29, 79]
CUTOFF = 4.5


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(0)
    model = zoo.create_model("egnn-potential", hidden_nf=16, n_layers=2, cutoff=CUTOFF, elements=ELEMENTS)
    return model.double().eval()


def graph_of(atoms: Atoms):
    return radius_graph(from_ase(atoms, dtype=torch.float64), CUTOFF)


@pytest.mark.parametrize("max_edges", [1, 7, 20])
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_chunked_equals_unchunked(potential, system, max_edges):
    atoms = SYSTEMS[system]()
    graph = graph_of(atoms)
    degree = torch.bincount(graph.edge_index[1])
    chunks = edge_chunks(graph.edge_index, len(atoms), max_edges)
    assert len(chunks) >= 3  # many chunks
    assert int(degree.max()) > max_edges or any(0 < c.num_edges < max_edges for c in chunks[:-1])
    if max_edges == 7:
        assert int(degree.max()) > 7  # nodes with more edges than a chunk: a chunk of their own
    stress = bool(atoms.pbc.all())
    potential.set_edge_chunk_size(None)
    expected = potential(graph, compute_stress=stress)
    potential.set_edge_chunk_size(max_edges)
    try:
        actual = potential(graph, compute_stress=stress)
    finally:
        potential.set_edge_chunk_size(None)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert (actual[key] - value).abs().max() <= 1e-10, key


def test_calculator_option(potential, monkeypatch):
    calls = []
    chunked_sum = zoo.models.egnn.chunked_scatter_sum
    monkeypatch.setattr(
        zoo.models.egnn, "chunked_scatter_sum", lambda *args, **kwargs: calls.append(1) or chunked_sum(*args, **kwargs)
    )
    atoms = periodic()
    atoms.calc = zoo.calculator(potential)
    expected = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
    assert not calls
    chunked = atoms.copy()
    chunked.calc = zoo.calculator(potential, max_edges_per_chunk=20)
    assert chunked.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-10)
    assert np.abs(chunked.get_forces() - expected["forces"]).max() < 1e-10
    assert np.abs(chunked.get_stress() - expected["stress"]).max() < 1e-10
    assert len(calls) == 2 * potential.n_layers  # every layer chunked, energy/forces and stress calls
    assert potential.edge_chunk_size is None  # the model's own setting is restored after each call
    assert chunked.calc.max_edges_per_chunk == 20


def test_predict_option(potential):
    items = [periodic(), slab(), molecular()]
    expected = zoo.predict(potential, items, batch_size=2)
    results = zoo.predict(potential, items, batch_size=2, max_edges_per_chunk=9)
    for result, reference in zip(results, expected, strict=True):
        assert sorted(result) == sorted(reference)
        for key, value in reference.items():
            assert np.abs(np.asarray(result[key]) - value).max() <= 1e-10, key


class Unchunkable(torch.nn.Module):
    """A potential without the chunking protocol (delegates to an EGNN potential)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.metadata = inner.metadata

    def forward(self, graph, **options):
        return self.inner(graph, **options)


def test_models_that_cannot_chunk_warn_on_big_systems(potential):
    model = Unchunkable(potential)
    atoms = periodic()
    atoms.calc = zoo.calculator(model, max_edges_per_chunk=10)
    with pytest.warns(UserWarning, match=r"max_edges_per_chunk=10 is ignored: Unchunkable cannot process its edges"):
        energy = atoms.get_potential_energy()
    reference = periodic()
    reference.calc = zoo.calculator(potential)
    assert energy == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    small = Atoms("CuO", positions=[[0, 0, 0], [0, 0, 1.9]])  # 2 edges: nothing to chunk, no warning
    small.calc = zoo.calculator(model, max_edges_per_chunk=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small.get_potential_energy()
    with pytest.warns(UserWarning, match="Unchunkable"):
        zoo.predict(model, [periodic()], max_edges_per_chunk=10)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "100"])
def test_bad_option(potential, bad):
    with pytest.raises(ValueError, match="max_edges_per_chunk must be a positive integer"):
        zoo.calculator(potential, max_edges_per_chunk=bad)
    with pytest.raises(ValueError, match="max_edges_per_chunk must be a positive integer"):
        zoo.predict(potential, [molecular()], max_edges_per_chunk=bad)


def torch_peak_bytes(call) -> int:
    """Largest total of live tensor bytes during ``call()`` (torch's CPU memory profiler)."""
    profiler = pytest.importorskip("torch.profiler")
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_chunked_peak_is_lower():
    """Loose: energy + forces of 256 atoms with 64 hidden features; the benchmark has the real figures."""
    torch.manual_seed(0)
    model = zoo.create_model("egnn-potential", hidden_nf=64, n_layers=2, cutoff=4.0, elements=[29]).eval()
    graph = radius_graph(from_ase(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)), 4.0)  # 4,608 edges
    unchunked = torch_peak_bytes(lambda: model(graph))
    model.set_edge_chunk_size(512)
    chunked = torch_peak_bytes(lambda: model(graph))
    assert 0 < chunked < 0.5 * unchunked, (chunked, unchunked)


def test_direct_force_models_run_without_autograd():
    """The calculator builds no autograd graph for a model whose forces are a direct output."""
    from zoo.calculators.ase import run_potential

    seen = []

    class Direct(torch.nn.Module):
        def __init__(self, force_mode="direct"):
            super().__init__()
            self.metadata = {"force_mode": force_mode}

        def forward(self, graph, **options):
            seen.append(torch.is_grad_enabled())
            return {"energy": graph.pos.sum()[None], "forces": graph.pos.clone()}

    graph = radius_graph(from_ase(bulk("Cu", cubic=True)), 3.0)
    with torch.enable_grad():
        run_potential(Direct(), graph)
        run_potential(Direct(force_mode="autograd"), graph)
        run_potential(Direct(), graph, compute_stress=True)  # stress by autograd: a graph is needed
    assert seen == [False, True, True]
