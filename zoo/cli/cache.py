"""``zoo cache ls|clear``: what is cached for each model card, and removing it."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from zoo.hub import cache_state, clear_cache
from zoo.registry import get_card, list_models

HELP = "list or clear cached model files"
EXAMPLES = """  zoo cache ls
  zoo cache clear equiformer-oc20
  zoo cache clear --all
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("ls", "clear"))
    parser.add_argument("names", nargs="*", help="models to clear (with 'clear')")
    parser.add_argument("--all", action="store_true", help="clear every model's files")
    parser.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HOME)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.action == "ls":
        table = Table()
        table.add_column("name", no_wrap=True)
        for header in ("source", "cached", "size (MB)", "path"):
            table.add_column(header, overflow="fold")
        for name in list_models():
            card = get_card(name)
            state = cache_state(card, args.cache_dir)
            if not state.paths:
                continue
            where = str(state.paths[0].parent if state.paths[0].is_file() else state.paths[0])
            cached = "complete" if state.complete else "partial"
            table.add_row(name, card.spec.source.kind, cached, f"{state.size / 1e6:.1f}", where)
        console.print(table)
        return 0
    if not args.names and not args.all:
        raise ValueError("name the models to clear, or pass --all")
    names = list_models() if args.all else [get_card(n).name for n in args.names]
    freed = sum(clear_cache(get_card(name), args.cache_dir) for name in names)
    console.print(f"freed {freed / 1e6:.1f} MB")
    return 0
