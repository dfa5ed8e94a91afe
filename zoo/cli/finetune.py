"""``zoo finetune BASE``: fine-tune a pretrained model (pretrained heads kept) on structure files."""

from __future__ import annotations

import argparse
import shlex
import sys

from zoo.cli.train import add_common_arguments, config_from_args
from zoo.train.run import run_training

HELP = "fine-tune a pretrained model on your structures (step-0 report, data checks, energy-reference refit)"
EXAMPLES = """  # finetune.yaml
  #   data: {batch_size: 8, energy_key: REF_energy, forces_key: REF_forces}
  #   loss: {targets: {energy: {weight: 1.0, per_atom: true}, forces: {weight: 100.0}}}
  #   optim: {lr: 1.0e-4}
  #   schedule: {name: plateau, warmup_steps: 100, patience: 3}
  #   train: {epochs: 50, monitor: forces_mae, early_stopping_patience: 10}
  #   finetune: {freeze: ["embedding.*"], energy_reference: auto}
  zoo finetune equiformer-oc20 --train train.extxyz --val val.extxyz -c finetune.yaml --output runs/ft
  zoo finetune ./my-checkpoint --train train.extxyz --val val.extxyz --output runs/ft2 --epochs 10
  zoo finetune equiformer-oc20 --train train.extxyz --output runs/ft --resume auto   # continue a killed run
  # prints the base model's validation metrics at step 0, then trains; the result is runs/ft/model:
  #   python -c "import zoo; zoo.load('runs/ft/model')"
  # and runs/ft/plots/: learning curves, parity plots (energy, forces; train and val) of that model
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="pretrained model: a name, alias, hf-hub:org/name or a checkpoint directory")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else f"zoo finetune {args.base}"
    run_training(config, output=args.output, base=args.base, resume=args.resume, command=command, plots=args.plots)
    return 0
