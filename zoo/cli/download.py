"""``zoo download NAME``: fill the cache so the model loads offline (e.g. on an air-gapped cluster)."""

from __future__ import annotations

import argparse

from rich.console import Console

from zoo.hub import resolve

HELP = "download (and convert) models into the cache for offline use"
EXAMPLES = """  zoo download equiformer-oc20
  zoo download hf-hub:org/name@0123abcd... --cache-dir /shared/hf
  # then, on the compute nodes: HF_HUB_OFFLINE=1 HF_HOME=/shared/hf python run.py
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", help="model names, aliases or hf-hub: specs")
    parser.add_argument("--revision", help="Hub revision for hf-hub: names")
    parser.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HOME)")
    parser.add_argument("--token", help="Hugging Face token for gated repos (default: HF_TOKEN / login)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    for name in args.names:
        resolved = resolve(name, revision=args.revision, cache_dir=args.cache_dir, token=args.token)
        console.print(f"{name}: cached at {resolved.directory}")
    return 0
