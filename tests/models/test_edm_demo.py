"""EDM at the level of distributions, and the embedded demo `edm-demo`.

* The sampled distribution is E(3)-invariant: per-molecule vector features of samples (the first atom's
  position and a type-weighted "dipole") have zero mean and isotropic directions, and match those of samples
  of another seed each moved by a random orthogonal matrix (a permutation two-sample test on the energy distance);
  invariant features (sorted pairwise distances) match between seeds. The same tests reject a sampler whose
  denoiser adds a fixed-direction shift before its centring, so they can fail.
* `edm-demo` ships inside the package, loads offline, learned its data (lower VLB than an untrained copy) and
  `zoo sample edm-demo` runs offline and prints the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import ase
import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy import stats

import zoo
from zoo.cli.main import main
from zoo.graph import AtomsGraph, batch_graphs
from zoo.models.edm import EDM

ALPHA = 1e-3  # every p-value of a correct sampler must exceed this; a broken one must fall below it
N_SAMPLES = 300
N_ATOMS = 4


# ------------------------------------------------------------------------------------- distribution tests
def _features(molecules: Sequence[ase.Atoms]) -> np.ndarray:
    """``[n, 6]``: the first atom's position and :math:`\\sum_i (Z_i - \\bar Z)\\, x_i` (both vectors)."""
    first = np.stack([a.positions[0] for a in molecules])
    dipole = np.stack([((a.numbers - a.numbers.mean())[:, None] * a.positions).sum(0) for a in molecules])
    return np.concatenate([first, dipole], axis=1)


def _hotelling(features: np.ndarray) -> float:
    """p-value of zero mean (Hotelling's :math:`T^2`, :math:`\\chi^2` limit)."""
    mean = features.mean(0)
    t2 = len(features) * mean @ np.linalg.solve(np.cov(features.T), mean)
    return float(stats.chi2.sf(t2, features.shape[1]))


def _bingham(vectors: np.ndarray) -> float:
    """p-value of isotropic directions (Bingham's test of the scatter matrix, :math:`\\chi^2_5` limit)."""
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    deviation = units.T @ units / len(units) - np.eye(3) / 3
    return float(stats.chi2.sf(15 * len(units) / 2 * np.trace(deviation @ deviation), 5))


def _energy_permutation(a: np.ndarray, b: np.ndarray, seed: int = 0, n_perm: int = 200) -> float:
    """p-value of "same distribution" (energy distance, permutation test; at least ``1 / (n_perm + 1)``)."""
    pooled = np.concatenate([a, b])
    distances = np.linalg.norm(pooled[:, None] - pooled[None], axis=-1)

    def statistic(order: np.ndarray) -> float:
        i, j = order[: len(a)], order[len(a) :]
        return 2 * distances[np.ix_(i, j)].mean() - distances[np.ix_(i, i)].mean() - distances[np.ix_(j, j)].mean()

    observed = statistic(np.arange(len(pooled)))
    rng = np.random.default_rng(seed)
    exceed = sum(statistic(rng.permutation(len(pooled))) >= observed for _ in range(n_perm))
    return (1 + exceed) / (1 + n_perm)


def _randomly_transformed(features: np.ndarray, seed: int) -> np.ndarray:
    """Each molecule's vectors moved by its own Haar-random orthogonal matrix (rotations and reflections)."""
    matrices = stats.ortho_group.rvs(3, size=len(features), random_state=seed)
    return np.concatenate([np.einsum("nij,nj->ni", matrices, features[:, k : k + 3]) for k in (0, 3)], axis=1)


def _sorted_distances(molecules: Sequence[ase.Atoms]) -> np.ndarray:
    return np.stack([np.sort(a.get_all_distances()[np.triu_indices(len(a), 1)]) for a in molecules])


def invariance_p_values(model: EDM) -> dict[str, float]:
    """p-values of the E(3)-invariance checks on ``N_SAMPLES`` molecules from each of two seeds."""
    first = model.sample(N_SAMPLES, n_atoms=N_ATOMS, seed=0, batch_size=N_SAMPLES)
    second = model.sample(N_SAMPLES, n_atoms=N_ATOMS, seed=1, batch_size=N_SAMPLES)
    a, b = _features(first), _features(second)
    ks = [
        stats.ks_2samp(x, y).pvalue
        for x, y in zip(_sorted_distances(first).T, _sorted_distances(second).T, strict=True)
    ]
    return {
        "zero mean": _hotelling(a),
        "isotropic first atom": _bingham(a[:, :3]),
        "same as randomly transformed": _energy_permutation(a, _randomly_transformed(b, seed=2)),
        "distances across seeds": min(1.0, min(ks) * len(ks)),  # Bonferroni
    }


@pytest.fixture
def random_edm() -> EDM:
    """A tiny untrained EDM whose coordinate head is not ~1e-3, so the denoiser shapes the geometry."""
    torch.manual_seed(0)
    model = zoo.create_model("edm-qm9", hidden_nf=16, n_layers=2, timesteps=10).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("coord_mlp.4.weight"):
                param.mul_(10.0)
    return model.eval()


def test_sampled_distribution_is_e3_invariant(random_edm):
    p_values = invariance_p_values(random_edm)
    assert min(p_values.values()) > ALPHA, p_values


def test_invariance_test_rejects_a_fixed_direction_shift(random_edm, monkeypatch):
    """The denoiser's coordinate output gets a fixed +z shift weighted by an invariant per-atom scalar (the first
    feature channel) before EDM centres it: translation-invariant still, rotation-equivariant no longer."""
    network = random_edm.dynamics.egnn
    forward = network.forward

    def shifted(h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_out, x_out = forward(h, x, edge_index)
        return h_out, x_out + x.new_tensor([0.0, 0.0, 0.05]) * h[:, :1]

    monkeypatch.setattr(network, "forward", shifted)
    p_values = invariance_p_values(random_edm)
    assert min(p_values.values()) < ALPHA, p_values


# --------------------------------------------------------------------------------------------- edm-demo
@pytest.fixture(scope="module")
def demo() -> EDM:
    return zoo.load("edm-demo", local_files_only=True)


def test_demo_ships_small_in_float32(demo):
    card = zoo.get_card("edm-demo")
    assert card.spec.source.kind == "embedded" and card.spec.task == "generative"
    assert all(p.dtype == torch.float32 for p in demo.parameters())
    assert sum(p.numel() for p in demo.parameters()) < 1_000_000
    assert demo.species == [1, 6, 7, 8, 9] and demo.T == 500 and max(demo.n_nodes) <= 29


def test_demo_learned_its_data(demo):
    """Its VLB on small molecules is far below that of the same architecture untrained."""
    molecules = [molecule(name) for name in ("CH4", "H2O", "NH3", "C2H6", "CH3OH", "CH3CH2OH", "HCOOH", "CH3CN")]
    graph = batch_graphs(
        [AtomsGraph.build(torch.tensor(a.positions, dtype=torch.float32), torch.tensor(a.numbers)) for a in molecules]
    )
    t_int = torch.arange(50, 401, 50)  # where the denoiser's noise prediction dominates the VLB terms
    generator = torch.Generator().manual_seed(0)

    def noise(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    torch.manual_seed(0)
    untrained = zoo.create_model("edm", **demo.zoo_config["model_args"]).eval()
    with torch.no_grad():
        trained_nll = demo.loss(graph, t_int=t_int, noise=noise)
        generator.manual_seed(0)
        untrained_nll = untrained.loss(graph, t_int=t_int, noise=noise)
    assert torch.isfinite(trained_nll).all() and (trained_nll < untrained_nll).all()
    assert trained_nll.mean() < 0.5 * untrained_nll.mean()


def test_demo_samples_molecules(demo):
    molecules = demo.sample(2, n_atoms=[5, 8], seed=0)
    assert [len(a) for a in molecules] == [5, 8]
    assert all(set(a.numbers) <= {1, 6, 7, 8, 9} and np.isfinite(a.positions).all() for a in molecules)


def test_zoo_sample_demo_offline(tmp_path, monkeypatch, capsys):
    """`zoo sample edm-demo` with downloads off. The CLI has no option for fewer diffusion steps, so this runs
    the full 500 steps on 2 small molecules; the card gives the time of `-n 100`."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output, report = tmp_path / "mols.extxyz", tmp_path / "metrics.json"
    arguments = ["sample", "edm-demo", "-n", "2", "--n-atoms", "6", "-o", str(output), "--metrics-json", str(report)]
    assert main(arguments) == 0
    assert [len(a) for a in ase.io.read(output, ":")] == [6, 6]
    metrics = json.loads(report.read_text())
    assert metrics["n_molecules"] == 2 and 0.0 <= metrics["atom_stability"] <= 1.0
    printed = capsys.readouterr().out
    assert "atom_stability" in printed and "molecule_stability" in printed and "validity" in printed
