"""The trainer shared by every model family.

:class:`Trainer` runs the loop: batches in a seeded order, weighted losses (or the model's own ``loss``),
gradient accumulation, autocast, gradient clipping, the optimiser and its schedule, an EMA of the weights,
validation with the EMA weights every epoch, ``last``/``best`` checkpoints with the full training state and
early stopping. Under ``torchrun`` the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`,
each process computes its slice of every global batch, and metrics are summed over processes.

Checkpoints (``<output>/checkpoints/last.safetensors`` and ``best.safetensors``, see :mod:`zoo.train.state`)
hold the model, EMA, optimiser, schedule, gradient scaler, RNG states of every process, the step and the data
position (epoch, batch), so a killed run continues with ``resume="auto"`` exactly where the checkpoint was
taken.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from zoo.graph import AtomsGraph, num_graphs
from zoo.train.config import TrainConfig
from zoo.train.data import batch_indices, collate, rank_slice
from zoo.train.distributed import DistContext, all_gather_objects, all_reduce_sum
from zoo.train.ema import EMA
from zoo.train.losses import MetricSums, label_counts, term_sums
from zoo.train.optim import LRSchedule, build_optimizer
from zoo.train.progress import Reporter
from zoo.train.state import StateError, load_state, save_state

__all__ = ["FitResult", "Trainer", "seed_everything"]

_GRAPHS = "__graphs__"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global stream that user code and libraries draw from
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()  # noqa: NPY002 - checkpointing the global stream
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restoring the global stream
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))


class ModelLoss(torch.nn.Module):
    """Wraps a model whose training objective is its own ``loss(batch) -> dict`` (diffusion models), so that
    DistributedDataParallel sees the call as the forward pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return model_loss(self.model, batch)


def model_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """``model.loss(batch)`` as a dict with a scalar ``"loss"``: a tensor of per-graph losses (what diffusion
    models such as :class:`~zoo.models.edm.EDM` return) becomes ``{"loss": its mean}``."""
    output = model.loss(batch)
    if isinstance(output, torch.Tensor):
        return {"loss": output.mean()}
    if not isinstance(output, dict) or "loss" not in output:
        raise TypeError(
            f"{type(model).__name__}.loss(batch) must return a tensor of per-graph losses or a dict with a 'loss' "
            f"entry, got {type(output).__name__}"
        )
    return output


@dataclass
class FitResult:
    """What a finished run reports: metrics at step 0, of the best epoch and of the last one, and the files."""

    step0: dict[str, float]
    best: dict[str, float]
    last: dict[str, float]
    best_step: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    stopped_early: bool = False


class Trainer:
    """One training run of ``model`` on graphs with edges (see :func:`zoo.train.data.load_graphs`).

    Args:
        model: the module to train (``model(batch) -> dict``, or with ``loss.kind: model`` a ``model.loss``).
        config: the validated configuration.
        train_graphs: training graphs (every process holds all of them and computes its slice of each batch).
        val_graphs: validation graphs (may be empty: then ``best`` follows the training loss).
        dist: the process context from :func:`zoo.train.distributed.setup`.
        output_dir: where ``checkpoints/``, ``metrics.csv`` and ``tensorboard/`` go; ``None`` writes nothing.
        reporter: progress and logs (default: a :class:`~zoo.train.progress.Reporter` on rank 0).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        train_graphs: Sequence[AtomsGraph],
        val_graphs: Sequence[AtomsGraph],
        *,
        dist: DistContext,
        output_dir: Path | None,
        reporter: Reporter | None = None,
    ) -> None:
        self.config = config
        self.dist = dist
        self.train_graphs = list(train_graphs)
        self.val_graphs = list(val_graphs)
        self.output_dir = output_dir
        self.reporter = reporter or Reporter(output_dir, enabled=dist.is_main, log_every=config.train.log_every_steps)
        run = config.train
        if run.precision == "fp16" and dist.device.type != "cuda":
            raise ValueError("train.precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
        if config.data.batch_size < dist.world_size:
            raise ValueError(
                f"data.batch_size ({config.data.batch_size}) is the global batch: it must be at least the number "
                f"of processes ({dist.world_size})"
            )
        if len(self.train_graphs) < dist.world_size:
            raise ValueError(f"{len(self.train_graphs)} training structures cannot feed {dist.world_size} processes")
        self.model = model.to(dist.device)
        self.targets = config.loss.targets
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.trainable, config.optim)
        self.groups_per_epoch = math.ceil(len(self._epoch_batches(0)) / config.optim.accumulate)
        total = run.epochs * self.groups_per_epoch
        self.total_steps = min(total, run.max_steps) if run.max_steps else total
        self.schedule = LRSchedule(self.optimizer, config.schedule, self.total_steps)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=run.precision == "fp16")
        self.ema = EMA(self.model, config.ema.decay) if config.ema.enabled else None
        network: torch.nn.Module = ModelLoss(self.model) if config.loss.kind == "model" else self.model
        if dist.world_size > 1:
            network = DistributedDataParallel(
                network, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
            )
        self.network = network
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric = math.inf
        self.best_step = 0
        self.bad_epochs = 0
        self.epoch_loss = 0.0
        self.epoch_steps = 0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------------ files
    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / "checkpoints"

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ranks": all_gather_objects(
                {"rng": _rng_state(), "epoch_loss": self.epoch_loss, "epoch_steps": self.epoch_steps}
            ),
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "best_metric": self.best_metric,
                "best_step": self.best_step,
                "bad_epochs": self.bad_epochs,
                "world_size": self.dist.world_size,
            },
            "history": self.history,
            "metadata": dict(getattr(self.model, "metadata", {})),
        }

    def save(self, name: str) -> Path | None:
        """Write the full training state to ``checkpoints/<name>.safetensors`` (collective: call on all ranks)."""
        state = self._state()
        if self.checkpoint_dir is None or not self.dist.is_main:
            return None
        return save_state(state, self.checkpoint_dir / f"{name}.safetensors")

    def resume(self, path: Path) -> None:
        """Restore the full training state from a checkpoint written by :meth:`save`."""
        state = load_state(path)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state["ema"] is None:
                raise StateError(f"{path}: saved without EMA but ema.enabled is true; keep the run's configuration")
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        progress = state["progress"]
        self.step, self.epoch = int(progress["step"]), int(progress["epoch"])
        self.batch_in_epoch = int(progress["batch_in_epoch"])
        self.best_metric, self.best_step = float(progress["best_metric"]), int(progress["best_step"])
        self.bad_epochs = int(progress["bad_epochs"])
        self.history = list(state["history"])
        ranks = state["ranks"]
        if len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            _set_rng_state(mine["rng"])
            self.epoch_loss, self.epoch_steps = float(mine["epoch_loss"]), int(mine["epoch_steps"])
        else:
            self.reporter.message(
                f"checkpoint written by {len(ranks)} process(es), resumed on {self.dist.world_size}: "
                "data order and weights continue exactly, random streams are re-seeded"
            )
            seed_everything(self.config.train.seed + 7919 * self.step + self.dist.rank)
            share = float(sum(r["epoch_loss"] for r in ranks)) / self.dist.world_size
            self.epoch_loss, self.epoch_steps = share, int(ranks[0]["epoch_steps"])
        self.reporter.message(
            f"resumed from {path} at step {self.step} (epoch {self.epoch + 1}, batch {self.batch_in_epoch})"
        )

    # ------------------------------------------------------------------------------------------------- data
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        data = self.config.data
        return batch_indices(
            len(self.train_graphs),
            data.batch_size,
            seed=self.config.train.seed,
            epoch=epoch,
            shuffle=True,
            drop_last=True,
        )

    def _groups(self, epoch: int) -> list[list[list[int]]]:
        batches = self._epoch_batches(epoch)
        accumulate = self.config.optim.accumulate
        return [batches[i : i + accumulate] for i in range(0, len(batches), accumulate)]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.dist.device.type, dtype=dtype)

    # ------------------------------------------------------------------------------------------------- steps
    def _counts(self, batch: Any) -> dict[str, int]:
        if self.config.loss.kind == "model":
            return {_GRAPHS: num_graphs(batch)}
        return label_counts(batch, self.targets)

    def _loss(self, output: dict[str, torch.Tensor], batch: Any, totals: dict[str, float]) -> torch.Tensor:
        """This process's share of the global-batch loss, scaled so that DDP's gradient average is exact."""
        world = self.dist.world_size
        if self.config.loss.kind == "model":
            return output["loss"] * (num_graphs(batch) * world / totals[_GRAPHS])
        sums = term_sums(output, batch, self.targets)
        return sum(self.targets[name].weight * value * (world / totals[name]) for name, value in sums.items())

    def _train_step(self, group: list[list[int]]) -> float:
        """One optimiser step over the global batches of ``group``; returns this process's loss share."""
        micro = [
            collate(self.train_graphs, rank_slice(batch, self.dist.rank, self.dist.world_size), self.dist.device)
            for batch in group
        ]
        counts = [self._counts(batch) for batch in micro]
        names = list(counts[0])
        local = torch.tensor([[c[n] for n in names] for c in counts], dtype=torch.float64).sum(0)
        totals = dict(zip(names, all_reduce_sum(local).tolist(), strict=True))
        lr = self.schedule.apply(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.network.train()
        total = 0.0
        for index, batch in enumerate(micro):
            sync = index == len(micro) - 1 or not isinstance(self.network, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.network.no_sync():
                with self._autocast():
                    output = self.network(batch)
                loss = self._loss(output, batch, totals)
                if not self.scaler.is_enabled() and not bool(torch.isfinite(loss)):
                    raise FloatingPointError(
                        f"the loss is {float(loss)} at step {self.step + 1} (lr {lr:.3g}); lower optim.lr, enable "
                        "optim.grad_clip or check the data. The last good state is checkpoints/last.safetensors"
                    )
                self.scaler.scale(loss).backward()
            total += float(loss.detach()) / self.dist.world_size
        if self.config.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return total

    # ------------------------------------------------------------------------------------------- evaluation
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights used for evaluation and export: the EMA copy if enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _val_batches(self, graphs: Sequence[AtomsGraph]) -> Iterator[Any]:
        data = self.config.data
        size = data.val_batch_size or data.batch_size
        for batch in batch_indices(len(graphs), size, seed=0, epoch=0, shuffle=False, drop_last=False):
            part = rank_slice(batch, self.dist.rank, self.dist.world_size)
            if part:
                yield collate(graphs, part, self.dist.device)

    def evaluate(
        self, graphs: Sequence[AtomsGraph] | None = None, model: torch.nn.Module | None = None
    ) -> dict[str, float]:
        """Metrics of ``model`` (default: the EMA weights) on ``graphs`` (default: the validation set), summed
        over processes: ``loss`` and ``<target>_mae`` / ``<target>_rmse``."""
        graphs = self.val_graphs if graphs is None else graphs
        model = self.eval_model if model is None else model
        was_training = model.training
        model.eval()
        try:
            if self.config.loss.kind == "model":
                return self._evaluate_model_loss(graphs, model)
            sums = MetricSums(self.targets)
            with torch.enable_grad():  # conservative forces are gradients of the energy
                for batch in self._val_batches(graphs):
                    with self._autocast():
                        output = model(batch)
                    sums.add(output, batch)
            sums.reduce()
            return sums.compute()
        finally:
            model.train(was_training)

    def _evaluate_model_loss(self, graphs: Sequence[AtomsGraph], model: torch.nn.Module) -> dict[str, float]:
        names: list[str] = []
        sums: dict[str, float] = {}
        count = 0
        with torch.enable_grad():
            for batch in self._val_batches(graphs):
                with self._autocast():
                    output = model_loss(model, batch)
                size = num_graphs(batch)
                count += size
                for key, value in output.items():
                    if key not in sums:
                        names.append(key)
                        sums[key] = 0.0
                    sums[key] += float(value.detach()) * size
        gathered = all_gather_objects((names, sums, count))
        total = sum(item[2] for item in gathered)
        keys = gathered[0][0]
        return {key: sum(item[1].get(key, 0.0) for item in gathered) / max(total, 1) for key in keys}

    def predict(self, graphs: Sequence[AtomsGraph]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{target: (predicted, label)}`` (float64, flattened; per atom for ``per_atom`` targets) of every weighted
        loss target on ``graphs``, by :attr:`eval_model` batched as :meth:`evaluate` does (parity plots use it).

        Collective under ``torchrun``: each process predicts its slice of every batch and rank 0 gets all, in order.
        """
        targets = {name: target for name, target in self.targets.items() if target.weight > 0}
        model = self.eval_model
        was_training = model.training
        model.eval()
        batches: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        try:
            with torch.enable_grad():  # conservative forces are gradients of the energy
                for batch in self._val_batches(graphs):
                    with self._autocast():
                        output = model(batch)
                    values = {}
                    for name, target in targets.items():
                        key = target.label or name
                        if name not in output or key not in batch:
                            continue
                        predicted, label = output[name].detach().double(), batch[key].double()
                        if target.per_atom:
                            natoms = batch.natoms.double().reshape(-1, *([1] * (predicted.dim() - 1)))
                            predicted, label = predicted / natoms, label / natoms
                        values[name] = (predicted.cpu().numpy().ravel(), label.cpu().numpy().ravel())
                    batches.append(values)
        finally:
            model.train(was_training)
        ranks = all_gather_objects(batches)  # rank r holds part r of each batch; only the last batch may lack parts
        ordered = [rank[index] for index in range(max(map(len, ranks))) for rank in ranks if index < len(rank)]
        return {
            name: (
                np.concatenate([part[name][0] for part in ordered if name in part]),
                np.concatenate([part[name][1] for part in ordered if name in part]),
            )
            for name in targets
            if any(name in part for part in ordered)
        }

    # ----------------------------------------------------------------------------------------------- the loop
    def _monitor(self, metrics: dict[str, float]) -> float:
        name = self.config.train.monitor
        if name not in metrics:
            raise KeyError(
                f"train.monitor is {name!r} but the validation metrics are {sorted(metrics)}; pick one of them"
            )
        return metrics[name]

    def _end_epoch(self) -> bool:
        """Validate, log, checkpoint; returns True when early stopping ends the run.

        Between validation epochs (``train.val_every_epochs`` > 1) only the epoch counter moves on.
        """
        run = self.config.train
        final = self.epoch + 1 >= run.epochs or self.step >= self.total_steps
        if (self.epoch + 1) % run.val_every_epochs and not final:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.epoch_loss, self.epoch_steps = 0.0, 0
            return False
        summed = all_reduce_sum(torch.tensor([self.epoch_loss], dtype=torch.float64))
        train_loss = float(summed[0]) / max(self.epoch_steps, 1)
        metrics = self.evaluate() if self.val_graphs else {"loss": train_loss}
        monitored = self._monitor(metrics)
        self.schedule.end_epoch(monitored)
        row: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step, "lr": self.schedule.lr_at(self.step)}
        row["train_loss"] = train_loss
        row.update({f"val_{key}": value for key, value in metrics.items()} if self.val_graphs else {})
        self.history.append(row)
        improved = monitored < self.best_metric
        if improved:
            self.best_metric, self.best_step, self.bad_epochs = monitored, self.step, 0
        else:
            self.bad_epochs += 1
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss, self.epoch_steps = 0.0, 0
        self.reporter.epoch(row, self.history)
        if improved:
            self.save("best")
        self.save("last")
        patience = self.config.train.early_stopping_patience
        return patience is not None and self.bad_epochs >= patience

    def fit(self, resume: Path | None = None) -> FitResult:
        """Train until the configured epochs or steps, or early stopping; ``resume`` continues a checkpoint.

        On a fresh start the validation metrics of the initial weights are computed first (the step-0 report
        of a fine-tuning run) and recorded as epoch 0.
        """
        run = self.config.train
        if resume is not None:
            self.resume(resume)
        elif self.val_graphs:
            step0 = self.evaluate(model=self.model)
            self.history.append({"epoch": 0, "step": 0, **{f"val_{k}": v for k, v in step0.items()}})
            self.reporter.message("step 0 (before training): " + " ".join(f"val_{k} {v:.6g}" for k, v in step0.items()))
        self.reporter.start(self.total_steps, self.step)
        stopped_early = False
        try:
            while self.epoch < run.epochs and self.step < self.total_steps and not stopped_early:
                groups = self._groups(self.epoch)
                while self.batch_in_epoch < len(groups) and self.step < self.total_steps:
                    loss = self._train_step(groups[self.batch_in_epoch])
                    self.batch_in_epoch += 1
                    self.epoch_loss, self.epoch_steps = self.epoch_loss + loss, self.epoch_steps + 1
                    self.reporter.step(self.step, self.epoch + 1, loss, self.schedule.lr_at(self.step))
                    every = self.config.checkpoint.every_steps
                    if every and self.step % every == 0 and self.batch_in_epoch < len(groups):
                        self.save("last")
                stopped_early = self._end_epoch()
                if stopped_early:
                    self.reporter.message(
                        f"early stopping: {run.monitor} did not improve for {self.bad_epochs} validation(s); "
                        f"best at step {self.best_step}"
                    )
        finally:
            self.reporter.close()
        step0 = self.history[0] if self.history and self.history[0]["epoch"] == 0 else {}
        best = next((row for row in self.history if row["step"] == self.best_step and row["epoch"] > 0), {})
        directory = self.checkpoint_dir
        return FitResult(
            step0=_metrics(step0),
            best=_metrics(best),
            last=_metrics(self.history[-1]) if self.history else {},
            best_step=self.best_step,
            steps=self.step,
            history=list(self.history),
            last_checkpoint=None if directory is None else directory / "last.safetensors",
            best_checkpoint=None if directory is None else directory / "best.safetensors",
            stopped_early=stopped_early,
        )


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    return {key: value for key, value in row.items() if key not in ("epoch", "step", "lr")}
