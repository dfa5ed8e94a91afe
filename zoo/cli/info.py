"""``zoo info NAME``: a model's card, licence, files and cache state."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from zoo.hub import cache_state
from zoo.registry import EmbeddedSource, HubSource, get_card

HELP = "show a model's card, licence, source files and cache state"
EXAMPLES = """  zoo info equiformer-oc20
  zoo info egnn-nbody-charged --no-card
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="model name or alias")
    parser.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HOME)")
    parser.add_argument("--no-card", action="store_true", help="skip the card's prose")


def run(args: argparse.Namespace) -> int:
    console = Console()
    card = get_card(args.name)
    spec = card.spec
    source = spec.source
    table = Table(show_header=False, box=None)
    table.add_row("name", spec.name)
    table.add_row("aliases", ", ".join(spec.aliases) or "-")
    table.add_row("architecture", spec.architecture)
    table.add_row("task", spec.task)
    table.add_row("licence", card.license)
    if spec.paper:
        table.add_row("paper", spec.paper)
    if isinstance(source, HubSource):
        table.add_row("source", f"hf-hub:{source.repo_id}@{source.revision}")
        for filename, sha in source.files.items():
            table.add_row("", f"{filename}  sha256 {sha[:16]}...")
    elif isinstance(source, EmbeddedSource):
        table.add_row("source", f"embedded ({source.path})")
    else:
        where = source.url or f"hf-hub:{source.repo_id}/{source.filename}"
        table.add_row("source", f"{where}  (converter: {source.converter})")
        table.add_row("sha256", source.sha256 or "not pinned yet (printed on first download)")
    state = cache_state(card, args.cache_dir)
    cached = f"yes, {state.size / 1e6:.1f} MB" if state.complete else "no (zoo download " + spec.name + ")"
    table.add_row("cached", cached)
    for metric in spec.metrics:
        table.add_row("metric", f"{metric.name} = {metric.value:g} {metric.unit} ({metric.dataset}; by {metric.by})")
    if spec.deprecated:
        table.add_row("DEPRECATED", f"use {spec.deprecated.replaced_by}")
    console.print(table)
    if not args.no_card and card.body.strip():
        console.print(Markdown(card.body))
    return 0
