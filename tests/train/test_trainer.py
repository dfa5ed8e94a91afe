"""The trainer: accumulation equals a bigger batch, early stopping, plateau schedule, a model's own loss
(diffusion-style), autocast, and `zoo train` from a config with a model section."""

from __future__ import annotations

import ase.io
import pytest
import torch

import zoo
from zoo.cli.main import main
from zoo.graph import from_ase, node_graph_index, num_graphs, radius_graph
from zoo.train.config import TrainConfig, apply_overrides
from zoo.train.distributed import DistContext
from zoo.train.trainer import Trainer

SINGLE = DistContext(rank=0, world_size=1, device=torch.device("cpu"))


def _graphs(path, dtype=torch.float64):
    return [radius_graph(from_ase(a, dtype=dtype), 4.0) for a in ase.io.read(path, index=":")]


def _config(*overrides: str) -> TrainConfig:
    return TrainConfig.model_validate(apply_overrides({}, ["train.dtype=float64", *overrides]))


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model("test-pair-potential", num_basis=8, cutoff=4.0, hidden=16).double()


def test_gradient_accumulation_equals_the_bigger_batch(emt_data):
    graphs = _graphs(emt_data["train"])
    results = []
    for overrides in (["data.batch_size=4"], ["data.batch_size=2", "optim.accumulate=2"]):
        config = _config(*overrides, "train.epochs=2", "optim.lr=0.01")
        trainer = Trainer(_model(), config, graphs, [], dist=SINGLE, output_dir=None)
        trainer.fit()
        assert trainer.step == 12
        results.append(trainer.model.state_dict())
    for key, value in results[0].items():
        torch.testing.assert_close(results[1][key], value, rtol=1e-10, atol=1e-12)


def test_early_stopping_and_plateau_schedule(emt_data):
    model = _model()
    for name, param in model.named_parameters():
        param.requires_grad_(name == "element_energy.weight")  # forces cannot improve
    config = _config(
        "train.epochs=20",
        "train.monitor=forces_mae",
        "train.early_stopping_patience=2",
        "schedule.name=plateau",
        "schedule.patience=0",
        "data.batch_size=8",
    )
    graphs = _graphs(emt_data["train"])
    trainer = Trainer(model, config, graphs, _graphs(emt_data["val"]), dist=SINGLE, output_dir=None)
    result = trainer.fit()
    assert result.stopped_early and trainer.epoch == 3
    assert result.best_step == 3  # the first epoch; the next two did not improve
    assert trainer.schedule.plateau_scale == pytest.approx(0.25)  # halved after each bad epoch


class Denoiser(torch.nn.Module):
    """A diffusion-style model: its objective is its own ``loss`` (predict the noise added to positions)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(119, 8, dtype=torch.float64)
        self.net = torch.nn.Sequential(torch.nn.Linear(11, 16), torch.nn.SiLU(), torch.nn.Linear(16, 3)).double()

    def loss(self, batch) -> dict[str, torch.Tensor]:
        noise = 0.1 * torch.randn_like(batch.pos)
        graph = node_graph_index(batch)
        centre = torch.zeros(num_graphs(batch), 3, dtype=batch.pos.dtype).index_add(0, graph, batch.pos)
        noisy = batch.pos - (centre / batch.natoms[:, None])[graph] + noise
        predicted = self.net(torch.cat([self.embed(batch.z), noisy], dim=-1))
        mse = (predicted - noise).square().mean()
        return {"loss": mse, "noise_rmse": mse.detach().sqrt()}


def test_a_models_own_loss_drives_training(emt_data):
    torch.manual_seed(0)
    config = _config("loss.kind=model", "train.epochs=5", "data.batch_size=4", "optim.lr=0.01")
    graphs = _graphs(emt_data["train"])
    trainer = Trainer(Denoiser(), config, graphs, _graphs(emt_data["val"]), dist=SINGLE, output_dir=None)
    result = trainer.fit()
    assert set(result.step0) == {"val_loss", "val_noise_rmse"}
    assert result.best["val_loss"] < 0.5 * result.step0["val_loss"]


def test_bf16_autocast_on_cpu_and_fp16_needs_cuda(emt_data):
    graphs = _graphs(emt_data["train"], dtype=torch.float32)
    config = TrainConfig.model_validate(apply_overrides({}, ["train.precision=bf16", "train.epochs=1"]))
    trainer = Trainer(_model().float(), config, graphs, graphs[:4], dist=SINGLE, output_dir=None)
    result = trainer.fit()
    assert torch.isfinite(torch.tensor(result.last["train_loss"]))
    fp16 = TrainConfig.model_validate(apply_overrides({}, ["train.precision=fp16"]))
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        Trainer(_model().float(), fp16, graphs, [], dist=SINGLE, output_dir=None)


def test_zoo_train_from_a_config_file(tmp_path, emt_data, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        "model:\n"
        "  architecture: test-pair-potential\n"
        "  args: {num_basis: 8, cutoff: 4.0, hidden: 16}\n"
        "  metadata: {elements: [29, 78, 79]}\n"
        "data: {batch_size: 6}\n"
        "optim: {lr: 0.01}\n"
        "train: {epochs: 2, log_every_steps: 2, device: cpu}\n"
    )
    output = tmp_path / "run"
    assert main(["train", "-c", str(config), "--train", str(emt_data["train"]), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert "step 2/8" in out and "eta" in out  # plain progress lines off a terminal
    model = zoo.load(output / "model")
    assert model.metadata["elements"] == [29, 78, 79]
    card = (output / "model" / "README.md").read_text()
    assert "trained from scratch" in card and "base_model" not in card
    assert (output / "checkpoints" / "best.safetensors").is_file() and (output / "metrics.csv").is_file()

    assert main(["finetune", str(output / "model"), "-c", str(config), "--train", "x", "-o", str(tmp_path / "b")]) == 2
    assert "remove the model: section" in capsys.readouterr().err


class PerGraphDenoiser(Denoiser):
    """Returns per-graph losses ``[B]`` as EDM.loss does; the trainer minimises their mean."""

    def loss(self, batch) -> torch.Tensor:
        noise = 0.1 * torch.randn_like(batch.pos)
        graph = node_graph_index(batch)
        predicted = self.net(torch.cat([self.embed(batch.z), batch.pos + noise], dim=-1))
        per_atom = (predicted - noise).square().sum(dim=1)
        return torch.zeros(num_graphs(batch), dtype=per_atom.dtype).index_add(0, graph, per_atom) / batch.natoms


def test_per_graph_losses_are_averaged(emt_data):
    torch.manual_seed(0)
    config = _config("loss.kind=model", "train.epochs=3", "data.batch_size=4", "optim.lr=0.01")
    graphs = _graphs(emt_data["train"])
    trainer = Trainer(PerGraphDenoiser(), config, graphs, _graphs(emt_data["val"]), dist=SINGLE, output_dir=None)
    result = trainer.fit()
    assert set(result.step0) == {"val_loss"}
    assert result.best["val_loss"] < result.step0["val_loss"]

    class Bad(Denoiser):
        def loss(self, batch):
            return [1.0]

    with pytest.raises(TypeError, match="tensor of per-graph losses or a dict"):
        Trainer(Bad(), config, graphs, [], dist=SINGLE, output_dir=None).fit()
