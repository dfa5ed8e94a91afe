"""``zoo train -c config.yaml``: train an architecture from scratch (one trainer for every model family)."""

from __future__ import annotations

import argparse
import shlex
import sys

from zoo.train.config import TrainConfig, load_config
from zoo.train.run import run_training

HELP = "train a registered architecture from scratch on structure files (extxyz, ...)"
EXAMPLES = """  # train.yaml
  #   model: {architecture: equiformer_v2, args: {num_layers: 4}}
  #   data: {batch_size: 16}
  #   loss: {targets: {energy: {weight: 1.0, per_atom: true}, forces: {weight: 10.0}}}
  #   optim: {name: adamw, lr: 5.0e-4, grad_clip: 10.0}
  #   schedule: {name: cosine, warmup_steps: 500}
  #   ema: {decay: 0.999}
  #   train: {epochs: 100, precision: bf16, early_stopping_patience: 20}
  zoo train -c train.yaml --train train.extxyz --val val.extxyz --output runs/eqv2
  zoo train -c train.yaml --train train.extxyz --output runs/eqv2 --resume auto   # continue a killed run
  zoo train -c train.yaml --train train.extxyz --set optim.lr=1e-4 --set train.epochs=5
  torchrun --nproc_per_node 4 -m zoo.cli.main train -c train.yaml --train train.extxyz --output runs/ddp
  # outputs: runs/eqv2/model (zoo.load it), checkpoints/{last,best}.safetensors, metrics.csv,
  #   plots/ (learning curves, parity plots of energy and forces on train and val; --no-plots: none)
"""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``zoo train`` and ``zoo finetune``: data, output, resume and config overrides."""
    parser.add_argument("-c", "--config", help="YAML configuration (unknown keys are errors)")
    parser.add_argument("--train", nargs="+", metavar="FILE", help="training structure files (data.train)")
    parser.add_argument("--val", nargs="+", metavar="FILE", help="validation structure files (data.val)")
    parser.add_argument("-o", "--output", required=True, help="run directory (checkpoints, metrics, model/)")
    parser.add_argument(
        "--resume",
        default="never",
        metavar="auto|never|PATH",
        help="auto: continue OUTPUT/checkpoints/last.safetensors if present; never (default): refuse to overwrite "
        "a run; or a checkpoint file",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config key, e.g. --set optim.lr=1e-4 (value parsed as YAML; repeatable)",
    )
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--lr", type=float, help="optim.lr")
    parser.add_argument("--batch-size", type=int, help="data.batch_size (global, all processes)")
    parser.add_argument("--seed", type=int, help="train.seed")
    parser.add_argument("--device", help="train.device: auto, cpu or cuda")
    parser.add_argument(
        "--no-plots",
        dest="plots",
        action="store_false",
        help="do not write OUTPUT/plots/ (learning curves and parity plots of the exported model, PNG)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration file with the command-line flags applied on top (flags win)."""
    overrides = list(args.overrides)
    flags = {
        "train.epochs": args.epochs,
        "optim.lr": args.lr,
        "data.batch_size": args.batch_size,
        "train.seed": args.seed,
        "train.device": args.device,
    }
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.train:
        overrides.append(f"data.train={_yaml_list(args.train)}")
    if args.val:
        overrides.append(f"data.val={_yaml_list(args.val)}")
    return load_config(args.config, overrides)


def _yaml_list(paths: list[str]) -> str:
    quoted = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
    return f"[{quoted}]"


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "zoo train"
    run_training(config, output=args.output, resume=args.resume, command=command, plots=args.plots)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
