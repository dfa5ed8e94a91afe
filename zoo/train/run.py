"""A whole run, as ``zoo train`` and ``zoo finetune`` do it: model, data, checks, training, export.

Output directory layout::

    <output>/train_config.yaml            the resolved configuration
    <output>/checkpoints/last.safetensors the full training state (resume with resume="auto")
    <output>/checkpoints/best.safetensors the state of the best validation epoch
    <output>/metrics.csv                  one row per epoch (epoch 0 = before training)
    <output>/tensorboard/                 when tensorboard is installed
    <output>/model/                       the zoo checkpoint: config.json, model.safetensors, README.md
    <output>/plots/                       learning_curves.png; parity_<target>_<split>.png of the exported model
                                          on the train and val structures, with the points drawn in .npz
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed
import yaml
from rich.console import Console

from zoo import plots as figures
from zoo.api import load
from zoo.checkpoint import save_pretrained
from zoo.graph import AtomsGraph
from zoo.kernels import set_backend
from zoo.registry import create_model, get_architecture
from zoo.train.card import DataFile, training_card
from zoo.train.config import TrainConfig
from zoo.train.data import DataError, load_graphs, open_graph_dataset, read_structures, validate_structures
from zoo.train.distributed import setup
from zoo.train.finetune import freeze, refit_energy_reference, reinitialize
from zoo.train.progress import Reporter
from zoo.train.state import load_state
from zoo.train.trainer import FitResult, Trainer, seed_everything

__all__ = ["RunResult", "run_training"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PARITY_MAX_STRUCTURES = 2000  # per split: an evenly spaced subset of larger sets is drawn


@dataclass
class RunResult:
    """A finished run: the trainer's result and the exported zoo checkpoint directory (rank 0 only)."""

    fit: FitResult
    model_dir: Path | None


def _resume_path(output: Path, resume: str) -> Path | None:
    last = output / "checkpoints" / "last.safetensors"
    if resume == "never":
        if last.exists():
            raise FileExistsError(
                f"{output} already holds a run ({last}); continue it with --resume auto, or pick another --output"
            )
        return None
    if resume == "auto":
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
    return path


def _build_model(config: TrainConfig, base: str | None, dtype: torch.dtype) -> torch.nn.Module:
    if base is not None:
        if config.model is not None:
            raise ValueError(
                "zoo finetune takes the architecture from the base model; remove the model: section of the config"
            )
        model = load(base)
    else:
        if config.model is None:
            raise ValueError("zoo train needs a model: section (architecture and args) in the config")
        model = create_model(config.model.architecture, **config.model.args)
        model.metadata = {**getattr(model, "metadata", {}), **config.model.metadata}
        if config.model.backend is not None:
            set_backend(model, config.model.backend)
    return model.to(dtype=dtype).train()


def _required_labels(config: TrainConfig) -> list[str]:
    if config.loss.kind == "model":
        return []
    return [target.label or name for name, target in config.loss.targets.items() if target.weight > 0]


def _file_graphs(
    config: TrainConfig, metadata: dict, dtype: torch.dtype
) -> tuple[list[AtomsGraph], list[AtomsGraph], list[DataFile]]:
    """Graphs of ``data.train``/``data.val`` structure files (checked first; neighbour lists at the cutoff)."""
    cutoff = config.data.cutoff or metadata.get("cutoff")
    if cutoff is None:
        raise ValueError("the model's metadata has no cutoff; set data.cutoff (Å) in the config")
    if not config.data.train:
        raise ValueError("no training data: pass --train FILE (or data.train or data.dataset in the config)")
    keys = {"energy": config.data.energy_key, "forces": config.data.forces_key, "stress": config.data.stress_key}
    train_structures = read_structures(config.data.train)
    val_structures = read_structures(config.data.val)
    required = _required_labels(config)
    try:
        validate_structures(
            [*train_structures, *val_structures],
            required=required,
            keys=keys,
            elements=metadata.get("elements"),
        )
    except DataError as exc:
        raise DataError(f"the data was checked before training and is not usable: {exc}") from None
    neighbors = {  # the model's own neighbour-list convention (EquiformerV2/eSCN keep the nearest max_neighbors)
        "max_neighbors": metadata.get("max_neighbors"),
        "strict_max_neighbors": bool(metadata.get("strict_max_neighbors", True)),
    }
    train_graphs = load_graphs(
        train_structures, float(cutoff), dtype=dtype, keys=keys, labels=required or None, **neighbors
    )
    val_graphs = load_graphs(
        val_structures, float(cutoff), dtype=dtype, keys=keys, labels=required or None, **neighbors
    )
    data = [
        *(DataFile.describe(p, "train", sum(s.source == p for s in train_structures)) for p in config.data.train),
        *(DataFile.describe(p, "val", sum(s.source == p for s in val_structures)) for p in config.data.val),
    ]
    return train_graphs, val_graphs, data


def _dataset_graphs(
    config: TrainConfig, dtype: torch.dtype
) -> tuple[list[AtomsGraph], list[AtomsGraph], list[DataFile]]:
    """Graphs of the ``data.dataset`` splits, which bring their own edges; labels are checked to be present."""
    source = config.data.dataset
    assert source is not None
    if config.data.train or config.data.val:
        raise ValueError("data.dataset and data.train/data.val (structure files) exclude each other; keep one")
    splits = {"train": source.train_split, "val": source.val_split}
    graphs: dict[str, list[AtomsGraph]] = {}
    data: list[DataFile] = []
    for role, split in splits.items():
        if split is None:
            graphs[role] = []
            continue
        dataset = open_graph_dataset(source.name, source.root, split, dtype=dtype, args=source.args)
        graphs[role] = [dataset[i] for i in range(len(dataset))]
        missing = [label for label in _required_labels(config) if graphs[role] and label not in graphs[role][0]]
        if missing:
            raise DataError(
                f"split {split!r} of the {source.name!r} data set has no field {missing} that loss.targets uses "
                f"(its graphs have {sorted(graphs[role][0].keys())}); set loss.targets.<name>.label"
            )
        files = getattr(dataset, "files", [])
        data.append(DataFile.describe_files(f"{source.name}:{split}", source.root, files, role, len(dataset)))
    if not graphs["train"]:
        raise DataError(f"split {source.train_split!r} of the {source.name!r} data set in {source.root} is empty")
    return graphs["train"], graphs["val"], data


def _write_plots(
    directory: Path,
    history: Sequence[dict],
    predictions: dict[str, tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]],
    config: TrainConfig,
    metadata: dict,
) -> None:
    """Learning curves and, per split and target, a parity plot with its points in ``.npz`` (rank 0)."""
    figures.learning_curves(history, directory / "learning_curves.png")
    units = metadata.get("units") or {}
    for split, (structures, values) in predictions.items():
        for name, (predicted, label) in values.items():
            unit = units.get(name, "")
            if config.loss.targets[name].per_atom:
                unit = f"{unit}/atom" if unit else "per atom"
            stem = f"parity_{name}_{split}"
            drawn = figures.parity(
                predicted,
                label,
                directory / f"{stem}.png",
                name=name,
                unit=unit,
                title=f"{name}, {split}: exported model on {len(structures)} structures",
            )
            np.savez(
                directory / f"{stem}.npz",
                predicted=drawn["predicted"],
                reference=drawn["reference"],
                structures=structures,
            )


def run_training(
    config: TrainConfig,
    *,
    output: str | os.PathLike[str],
    base: str | None = None,
    resume: str = "never",
    console: Console | None = None,
    command: str = "zoo train",
    plots: bool = True,
) -> RunResult:
    """Train (``base=None``, architecture from ``config.model``) or fine-tune ``base`` and export the model.

    Args:
        config: the validated configuration; ``config.data.train`` (and ``val``) name the structure files.
        output: the run directory (see the module docstring).
        base: a pretrained model for fine-tuning: any name :func:`zoo.load` takes, or a checkpoint directory.
        resume: ``"never"`` (refuses an output directory that holds a run), ``"auto"`` (continue
            ``checkpoints/last.safetensors`` if present) or a checkpoint path.
        console: where progress goes (default: the terminal).
        command: the command line recorded in the model card.
        plots: write ``<output>/plots/`` (learning curves; parity plots of the exported model per split).

    Raises:
        DataError: problems in the data, all listed with file and frame.
        ConfigError, ValueError: an inconsistent configuration.
    """
    output = Path(output)
    run = config.train
    dist = setup(run.device)
    reporter = Reporter(output, enabled=dist.is_main, console=console, log_every=run.log_every_steps)
    if run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    resume_path = _resume_path(output, resume)
    if resume_path is not None:
        saved = load_state(resume_path)["config"]
        changed = sorted(
            f"{section}.{key}"
            for section, values in config.to_dict().items()
            if isinstance(values, dict)
            for key, value in values.items()
            if (saved.get(section) or {}).get(key) != value
        )
        if changed:
            reporter.message(f"resuming with a changed configuration: {', '.join(changed)}")
    seed_everything(run.seed)
    dtype = _DTYPES[run.dtype]
    model = _build_model(config, base, dtype)
    metadata = getattr(model, "metadata", {})
    if config.data.dataset is not None:
        train_graphs, val_graphs, data = _dataset_graphs(config, dtype)
        source = config.data.dataset
        where = f"the {source.name!r} data set in {source.root}"
    else:
        train_graphs, val_graphs, data = _file_graphs(config, metadata, dtype)
        where = f"cutoff {config.data.cutoff or metadata.get('cutoff')} Å"
    reporter.message(
        f"data: {len(train_graphs)} training and {len(val_graphs)} validation structures, {where}, "
        f"{dist.world_size} process(es) on {dist.device}"
    )

    tuning = config.finetune
    if base is not None or tuning.freeze or tuning.reinitialize:
        reset = reinitialize(model, tuning.reinitialize) if resume_path is None else []
        frozen = freeze(model, tuning.freeze)
        kept = "all pretrained weights kept" if not reset else f"re-initialised: {', '.join(reset)}"
        reporter.message(f"{kept}; frozen {len(frozen)} parameter tensor(s)")
    if base is not None and resume_path is None and "energy" in _required_labels(config):
        refit = refit_energy_reference(
            model, train_graphs, mode=tuning.energy_reference, parameter=tuning.energy_reference_parameter
        )
        if refit is not None:
            shifts = ", ".join(f"{symbol} {value:+.4f}" for symbol, value in refit.shifts.items())
            verdict = "applied" if refit.applied else "not applied (little gain)"
            reporter.message(
                f"energy reference refit {verdict}: {shifts} eV; training energy RMSE "
                f"{refit.rmse_before:.4g} -> {refit.rmse_after:.4g} eV/atom ({refit.parameter})"
            )

    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    trainer = Trainer(model, config, train_graphs, val_graphs, dist=dist, output_dir=output, reporter=reporter)
    fit = trainer.fit(resume_path)

    model_dir = None
    if plots and torch.distributed.is_initialized():
        torch.distributed.barrier()  # rank 0 has written the checkpoints that every process loads below
    if dist.is_main or plots:
        chosen = fit.best_checkpoint if fit.best_checkpoint and fit.best_checkpoint.exists() else fit.last_checkpoint
        state = load_state(chosen)
        trainer.eval_model.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
    predictions: dict[str, tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    if plots and config.loss.kind == "targets":
        for split, graphs in (("train", train_graphs), ("val", val_graphs)):
            if graphs:
                structures = figures.evenly_spaced(len(graphs), _PARITY_MAX_STRUCTURES)
                predictions[split] = (structures, trainer.predict([graphs[i] for i in structures]))
    if dist.is_main:
        export = trainer.eval_model
        architecture = model.zoo_config["architecture"]
        base_card = getattr(model, "card", None)
        card = training_card(
            architecture=architecture,
            task=metadata.get("task", get_architecture(architecture).task),
            license=base_card.license if base_card is not None else "other",
            base_model=base,
            data=data,
            step0=fit.step0,
            best=fit.best,
            config=config.to_dict(),
            command=command,
        )
        export.zoo_config = model.zoo_config
        export.metadata = dict(metadata)
        model_dir = save_pretrained(export, output / "model", card=card)
        reporter.message(
            f"{'fine-tuning' if base else 'training'} finished after {fit.steps} steps "
            f"(best at step {fit.best_step}{', stopped early' if fit.stopped_early else ''})"
        )
        reporter.summary("summary", {"step 0": fit.step0, "best (saved)": fit.best, "last": fit.last})
        reporter.message(f"model saved to {model_dir} (load it with zoo.load({str(model_dir)!r}))")
        if plots:
            _write_plots(output / "plots", fit.history, predictions, config, metadata)
            reporter.message(f"plots written to {output / 'plots'}")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return RunResult(fit, model_dir)
