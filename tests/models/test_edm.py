"""EDM: parity with the official code (golden fixtures from scripts/golden/make_edm_golden.py), equivariance,
schedules, sampling API and save/reload."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ase
import numpy as np
import pytest
import torch
from ase.build import molecule
from safetensors import safe_open

import zoo
from zoo.graph import AtomsGraph, batch_graphs
from zoo.models.edm import EDM, checkpoint_filter_fn, cosine_alphas2, polynomial_alphas2
from zoo.testing import assert_equivariant

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "edm"
CASES = ("qm9", "conditional", "learned")


def load_case(name: str) -> tuple[EDM, dict[str, torch.Tensor]]:
    """The zoo model with the official weights of a golden case, and the case's tensors."""
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        golden = json.loads(handle.metadata()["golden"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    model = zoo.create_model("edm", **golden["zoo_args"]).double()
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(checkpoint_filter_fn(weights, model), strict=True)
    return model, tensors


def replay(draws: torch.Tensor) -> Callable[[tuple[int, ...]], torch.Tensor]:
    """A noise source returning the recorded official draws in order (and checking their shapes)."""
    queue = list(draws)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        raw = queue.pop(0)
        assert tuple(raw.shape) == tuple(shape)
        return raw

    return draw


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("name", CASES)
def test_denoiser_matches_official(name: str) -> None:
    model, g = load_case(name)
    with torch.no_grad():
        out = model.phi(g["denoiser.z_t"], g["denoiser.t"], g["node_mask"], g.get("context"))
    assert rel_err(out, g["denoiser.out"]) <= 1e-6


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_loss_matches_official(name: str, mode: str) -> None:
    model, g = load_case(name)
    model.train(mode == "train")
    with torch.no_grad():
        loss = model.loss_dense(
            g["pos"],
            g["one_hot"],
            g["charges"],
            g["node_mask"],
            context=g.get("context"),
            t_int=g[f"loss.t_{mode}"],
            draw=replay(g[f"noise.{mode}"]),
        )
    assert rel_err(loss, g[f"loss.{mode}"]) <= 1e-6


@pytest.mark.parametrize("name", CASES)
def test_sampling_trajectory_matches_official(name: str) -> None:
    model, g = load_case(name)
    model.eval()
    x, one_hot, charges = model.sample_dense(g["node_mask"], g.get("context"), replay(g["noise.sample"]))
    # Random weights make the trajectory sensitive to round-off: compare relatively (UPSTREAM-NOTES).
    assert rel_err(x, g["sample.x"]) <= 1e-6
    assert torch.equal(one_hot, g["sample.one_hot"])
    assert torch.equal(charges, g["sample.charges"])


def test_schedules_match_official_tables() -> None:
    with safe_open(str(FIXTURES / "schedules.safetensors"), framework="pt") as handle:
        for name in ("polynomial_2", "cosine"):
            model = EDM(hidden_nf=4, n_layers=1, timesteps=1000, noise_schedule=name, norm_values=(1, 1, 1))
            assert torch.equal(model.gamma.gamma.detach(), handle.get_tensor(name))
    alphas2 = polynomial_alphas2(1000, 1e-5, 2.0)
    assert alphas2.shape == (1001,) and np.all(np.diff(alphas2) <= 0) and alphas2[0] == pytest.approx(1 - 1e-5)
    assert cosine_alphas2(1000).shape == (1001,)


def _noisy_graphs(model: EDM) -> AtomsGraph:
    generator = torch.Generator().manual_seed(0)
    graphs = []
    for count in (4, 6):
        pos = torch.randn(count, 3, generator=generator, dtype=torch.float64)
        features = torch.randn(count, model.in_node_nf, generator=generator, dtype=torch.float64)
        graphs.append(AtomsGraph.build(pos - pos.mean(0), x=features))
    return batch_graphs(graphs)


@pytest.mark.parametrize("options", [{}, {"sin_embedding": True, "tanh": False, "attention": False}])
def test_denoiser_equivariance(options: dict) -> None:
    model = zoo.create_model("edm-qm9", hidden_nf=16, n_layers=2, inv_sublayers=2, **options).double()
    with torch.no_grad():  # make the coordinate path matter
        for name, param in model.named_parameters():
            if name.endswith("coord_mlp.4.weight"):
                param.mul_(300.0)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    assert_equivariant(
        lambda graph: model(graph, t), _noisy_graphs(model), output_types={"eps_pos": "vector", "eps_h": "scalar"}
    )


def test_sample_api_and_histogram() -> None:
    model = zoo.create_model("edm-qm9", hidden_nf=8, n_layers=1, timesteps=5).double()
    first = model.sample(5, seed=3, batch_size=2)
    again = model.sample(5, seed=3, batch_size=2)
    assert len(first) == 5 and all(isinstance(a, ase.Atoms) for a in first)
    assert all(len(a) in zoo.models.edm.QM9_N_NODES for a in first)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
        assert set(a.numbers) <= {1, 6, 7, 8, 9}
        assert np.abs(a.positions.mean(0)).max() < 1e-6
    assert [len(a) for a in model.sample(3, n_atoms={7: 1}, seed=0)] == [7, 7, 7]
    assert [len(a) for a in model.sample(2, n_atoms=[3, 4], seed=0)] == [3, 4]
    with pytest.raises(ValueError, match="entries"):
        model.sample(2, n_atoms=[3])
    with pytest.raises(ValueError, match="at least one atom"):
        model.sample(1, n_atoms=0)
    torch.manual_seed(5)
    unseeded = model.sample(1, n_atoms=4)
    torch.manual_seed(5)
    assert np.array_equal(model.sample(1, n_atoms=4)[0].positions, unseeded[0].positions)


def test_conditional_needs_context() -> None:
    model = zoo.create_model("edm-qm9-conditional", hidden_nf=8, n_layers=1, timesteps=3).double()
    with pytest.raises(ValueError, match="conditional"):
        model.sample(2, n_atoms=3)
    atoms = model.sample(2, n_atoms=3, context=torch.tensor([[0.5], [-0.5]]), seed=0)
    assert [len(a) for a in atoms] == [3, 3]


def test_loss_on_graphs_and_backward() -> None:
    model = zoo.create_model("edm-qm9", hidden_nf=8, n_layers=1, timesteps=10).double()
    molecules = [molecule("CH4"), molecule("H2O")]
    graph = batch_graphs([AtomsGraph.build(torch.tensor(a.positions), torch.tensor(a.numbers)) for a in molecules])
    model.train()
    loss = model.loss(graph)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()
    model.eval()
    with torch.no_grad():
        nll = model.loss(graph)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    bad = AtomsGraph.build(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([17]))
    with pytest.raises(Exception, match="elements"):
        model.loss(batch_graphs([bad]))


def test_save_reload_round_trip(tmp_path: Path) -> None:
    model = zoo.create_model("edm-qm9", hidden_nf=8, n_layers=1, timesteps=4, n_nodes={3: 1, 4: 2})
    zoo.save_pretrained(model, tmp_path / "edm")
    loaded = zoo.load(str(tmp_path / "edm"))
    assert loaded.n_nodes == {3: 1, 4: 2}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="aggregation_method"):
        EDM(aggregation_method="mean")
    with pytest.raises(ValueError, match="learned"):
        EDM(noise_schedule="learned", loss_type="l2")
    with pytest.raises(ValueError, match="noise_schedule"):
        EDM(noise_schedule="linear")


# ------------------------------------------------------------------------------------------------- converter
OFFICIAL_QM9_ARGS = {  # the golden "qm9" case in the official argument names, as main_qm9.py writes them
    "exp_name": "tiny",
    "model": "egnn_dynamics",
    "probabilistic_model": "diffusion",
    "diffusion_steps": 20,
    "diffusion_noise_schedule": "polynomial_2",
    "diffusion_noise_precision": 1e-05,
    "diffusion_loss_type": "l2",
    "n_layers": 2,
    "inv_sublayers": 2,
    "nf": 16,
    "tanh": True,
    "attention": True,
    "norm_constant": 1,
    "sin_embedding": False,
    "dataset": "qm9",
    "conditioning": [],
    "normalize_factors": [1, 4, 10],
    "remove_h": False,
    "include_charges": True,
    "normalization_factor": 1,
    "condition_time": True,
    "context_node_nf": 0,
}


def _write_official(folder: Path, weights: dict[str, torch.Tensor], args: dict) -> Path:
    import argparse
    import pickle

    folder.mkdir()
    torch.save({f"{k}": v.float() for k, v in weights.items()}, folder / "generative_model_ema.npy")
    (folder / "args.pickle").write_bytes(pickle.dumps(argparse.Namespace(**args)))
    return folder / "generative_model_ema.npy"


def test_converter_official_folder(tmp_path: Path) -> None:
    from zoo.converters import convert
    from zoo.converters.edm import load_args

    _, g = load_case("qm9")
    weights = {k.removeprefix("weights."): v for k, v in g.items() if k.startswith("weights.")}
    path = _write_official(tmp_path / "edm_qm9", weights, OFFICIAL_QM9_ARGS)
    assert "aggregation_method" not in load_args(path.parent / "args.pickle")
    model = convert("edm", path).double()
    assert model.T == 20 and model.species == [1, 6, 7, 8, 9] and model.n_nodes == zoo.models.edm.QM9_N_NODES
    with torch.no_grad():
        out = model.phi(g["denoiser.z_t"], g["denoiser.t"], g["node_mask"])
    assert rel_err(out, g["denoiser.out"]) <= 1e-5  # weights went through float32, as in the released files
    inline = convert("edm", path, args={**OFFICIAL_QM9_ARGS, "aggregation_method": "sum"})
    assert torch.equal(inline.gamma.gamma, model.gamma.gamma.float())
    zoo.save_pretrained(inline, tmp_path / "converted", card=zoo.registry.get_card("edm-qm9"))  # as hub.py caches
    reloaded = zoo.load(str(tmp_path / "converted"))
    assert reloaded.T == 20 and reloaded.n_nodes == inline.n_nodes
    for key, value in inline.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key])


def test_converter_refuses_objects_in_args_pickle(tmp_path: Path) -> None:
    import pickle

    from zoo.converters.edm import load_args

    class Evil:
        def __reduce__(self):  # a pickle that would run a command if unpickled freely
            return (print, ("pwned",))

    (tmp_path / "args.pickle").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        load_args(tmp_path / "args.pickle")
    (tmp_path / "list.pickle").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="Namespace"):
        load_args(tmp_path / "list.pickle")


def test_converter_needs_histogram_for_geom() -> None:
    from zoo.converters.edm import model_args_from_official

    with pytest.raises(ValueError, match="n_nodes"):
        model_args_from_official({"dataset": "geom"})
    args = model_args_from_official({"dataset": "geom", "include_charges": False}, n_nodes={10: 1})
    assert len(args["species"]) == 16 and args["aggregation_method"] == "sum"
