"""FA-GNN (frame averaging at every layer, Puny et al. 2022): structure and official parameter names,
E(3) equivariance in float64, forward/backward, round trip, bad input, and the embedded N-body checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import zoo
from zoo.datasets import NBodyDataset, generate_nbody_dataset
from zoo.graph import AtomsGraph, GraphError, batch_graphs
from zoo.models.fa_gnn import GCL
from zoo.testing import assert_equivariant, nbody_graph

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_nf": 12, "n_layers": 3}
# Test MSE of the embedded checkpoint is about 0.008 on fresh data (card); x + t v, the paper's "Linear"
# baseline, is 0.08 and an untrained network about 4. The bound leaves room for the noise of 100 trajectories.
PRETRAINED_MSE_BOUND = 0.02


def tiny_input() -> AtomsGraph:
    return batch_graphs([nbody_graph(5, seed=1), nbody_graph(4, seed=2), nbody_graph(6, seed=3)])


def tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model("fa-gnn-nbody", **{**TINY, **kwargs}).double()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------- structure
def test_parameter_count_and_official_names():
    model = zoo.create_model("fa-gnn-nbody")
    assert sum(p.numel() for p in model.parameters()) == 92_103  # official FA_GNN(input_dim=6, hidden_nf=60)
    names = set(model.state_dict())
    assert {"embedding.0.weight", "decoder.0.weight", "decoder.2.bias"} <= names
    assert {f"gcl_3.{mlp}.{i}.weight" for mlp in ("edge_mlp", "node_mlp") for i in (0, 2)} <= names
    assert model.gcl_0.edge_mlp[0].in_features == 2 * 60 + 2  # (h_i, h_j, q_i q_j, |x_i - x_j|^2)
    assert model.metadata["task"] == "dynamics"
    assert model.metadata["frame_averaging"] == {"frames": "all", "group": "E3", "latent_frames": True}


def test_split_edge_linear_equals_the_concatenation():
    torch.manual_seed(0)
    layer = GCL(12, 2).double()
    h = torch.randn(7, 12, dtype=torch.float64)
    edge_index = torch.randint(0, 7, (2, 30))
    edge_attr = torch.randn(30, 2, dtype=torch.float64)
    source, target = edge_index
    message = layer.edge_mlp(torch.cat([h[target], h[source], edge_attr], dim=1))
    expected = torch.zeros(7, 12, dtype=torch.float64).index_add_(0, target, message)
    torch.testing.assert_close(layer.message_and_aggregate(h, edge_index, edge_attr), expected)


# ------------------------------------------------------------------------------------------------ symmetry
@pytest.mark.parametrize("kwargs", [TINY, {"hidden_nf": 60, "n_layers": 4}], ids=["tiny", "paper"])
def test_equivariance_float64(kwargs):
    model = tiny(**kwargs).eval()
    report = assert_equivariant(model, tiny_input())  # pos is a position: rotates, reflects and translates
    assert report.passed


def test_se3_group_is_rotation_equivariant():
    model = tiny(group="SE3").eval()
    assert assert_equivariant(model, tiny_input(), parity=False).passed


def test_predicts_positions_not_displacements():
    """The decoder output is rotated back and the input centroid added: a zero decoder predicts the centroid."""
    model = tiny().eval()
    torch.nn.init.zeros_(model.decoder[2].weight)
    torch.nn.init.zeros_(model.decoder[2].bias)
    graph = nbody_graph(5, seed=4)
    out = model(graph)["pos"]
    torch.testing.assert_close(out, graph.pos.mean(0, keepdim=True).expand(5, 3))


# ---------------------------------------------------------------------------------------- training / files
def test_forward_backward():
    model = tiny().train()
    graph = tiny_input()
    loss = (model(graph)["pos"] - graph.pos).square().mean()
    loss.backward()
    # a constant vector added in every frame averages to zero over the 8 sign patterns (as upstream)
    no_effect = {"decoder.2.bias", "gcl_0.node_mlp.2.bias", "gcl_1.node_mlp.2.bias"}
    for key, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
        if key in no_effect:
            assert param.grad.abs().max() < 1e-12, key
        else:
            assert param.grad.abs().max() > 1e-8, key


def test_float32_batch_matches_single_graphs():
    model = zoo.create_model("fa-gnn-nbody").eval()
    graphs = [nbody_graph(5, seed=seed, dtype=torch.float32) for seed in range(3)]
    batched = model(batch_graphs(graphs))["pos"]
    single = torch.cat([model(graph)["pos"] for graph in graphs])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = tiny().eval()
    again = zoo.from_pretrained(zoo.save_pretrained(model, tmp_path / "fa-gnn"))
    assert again.metadata == model.metadata
    graph = tiny_input()
    assert torch.equal(model(graph)["pos"], again(graph)["pos"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of 3"):
        zoo.create_model("fa-gnn-nbody", hidden_nf=64)
    with pytest.raises(ValueError, match="group must be"):
        zoo.create_model("fa-gnn-nbody", group="E2")
    graph = nbody_graph(5, seed=1)
    del graph.charges
    with pytest.raises(GraphError, match=r"graph\.charges"):
        tiny()(graph)
    with pytest.raises(GraphError, match="float32"):
        tiny()(nbody_graph(5, seed=1, dtype=torch.float32))


# ------------------------------------------------------------------------------------- embedded checkpoint
@pytest.fixture(scope="module")
def fresh_nbody(tmp_path_factory):
    """100 new test trajectories (seed 2031, never used in training), length 5000 as the paper."""
    root = tmp_path_factory.mktemp("nbody-fresh")
    generate_nbody_dataset(root, seed=2031, num_train=1, num_valid=1, num_test=100, length=5000, length_test=5000)
    return root


def test_pretrained_checkpoint_predicts_fresh_trajectories(fresh_nbody, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = zoo.load("fa-gnn-nbody-charged")
    assert model.zoo_config["architecture"] == "fa-gnn-nbody"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    evaluate = load_script("evaluate_nbody").evaluate
    result = evaluate(model, str(fresh_nbody), "test")
    assert result["trajectories"] == 100 and result["particles"] == 500
    assert result["mse"] < PRETRAINED_MSE_BOUND, result
    untrained = evaluate(zoo.create_model("fa-gnn-nbody"), str(fresh_nbody), "test")
    assert untrained["mse"] > 10 * PRETRAINED_MSE_BOUND


@pytest.mark.slow
def test_training_a_few_epochs_lowers_the_loss(tmp_path):
    from zoo.train.config import TrainConfig
    from zoo.train.run import run_training

    root = tmp_path / "data"
    generate_nbody_dataset(root, seed=7, num_train=200, num_valid=50, num_test=10)
    config = TrainConfig.model_validate(
        {
            "model": {"architecture": "fa-gnn-nbody"},
            "data": {"dataset": {"name": "nbody", "root": str(root), "args": {"kind": "charged"}}, "batch_size": 50},
            "loss": {"targets": {"pos": {"label": "pos_target", "kind": "mse"}}},
            "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-12},
            "ema": {"enabled": False},
            "train": {"device": "cpu", "epochs": 6, "val_every_epochs": 2, "log_every_steps": 100},
        }
    )
    result = run_training(config, output=tmp_path / "run")
    assert result.fit.best["val_loss"] < 0.2 * result.fit.step0["val_loss"]
    model = zoo.load(result.model_dir)
    test = NBodyDataset(root, "test")
    batch = batch_graphs([test[i] for i in range(len(test))])
    assert model(batch)["pos"].shape == batch.pos_target.shape
