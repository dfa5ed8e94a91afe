"""``zoo list``: pretrained models (from the cards shipped with zoo, offline) or architectures."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from zoo.registry import TASKS, get_card, list_architectures, list_models

HELP = "list pretrained models (offline) or architectures"
EXAMPLES = """  zoo list
  zoo list --task potential
  zoo list 'equiformer*'
  zoo list --architectures
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", help="shell-style pattern on names and aliases")
    parser.add_argument("--task", choices=TASKS, help="only models of this task")
    parser.add_argument("--architectures", action="store_true", help="list architectures instead")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.architectures:
        for name in list_architectures(args.filter):
            console.print(name)
        return 0
    table = Table()
    table.add_column("name", no_wrap=True)  # names are what users copy: never cut them
    for header in ("aliases", "architecture", "task", "licence", "source"):
        table.add_column(header, overflow="fold")
    for name in list_models(args.filter, task=args.task):
        card = get_card(name)
        spec = card.spec
        table.add_row(name, ", ".join(spec.aliases), spec.architecture, spec.task, card.license, spec.source.kind)
    console.print(table)
    return 0
