"""The ``zoo`` command: one sub-command per module of ``zoo.cli``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from zoo._version import __version__

EPILOG = """examples:
  zoo list --task potential            # pretrained models, offline
  zoo info equiformer-oc20             # card, licence, files, cache state
  zoo download equiformer-oc20         # fill the cache (e.g. on a login node)
  zoo cache ls                         # what is cached, and its size
  zoo relax slab.extxyz --model equiformer-v2-emt-demo --fmax 0.05
  zoo md bulk.extxyz --model egnn-emt-demo --ensemble nvt-langevin --T 300 --steps 1000
  zoo predict structures.extxyz --model egnn-emt-demo -o predicted.extxyz
"""


def _commands() -> dict[str, ModuleType]:
    from zoo.cli import cache, data, download, finetune, info, list_models, md, predict, push, relax, sample, train

    return {
        "list": list_models,
        "info": info,
        "download": download,
        "cache": cache,
        "train": train,
        "finetune": finetune,
        "data": data,
        "predict": predict,
        "relax": relax,
        "md": md,
        "push": push,
        "sample": sample,
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zoo`` with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="E(3)-equivariant graph networks: pretrained models, inference, training.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what zoo does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _commands().items():
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"examples:\n{module.EXAMPLES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except (KeyError, ValueError, OSError) as exc:
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
