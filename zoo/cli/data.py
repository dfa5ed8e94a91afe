"""``zoo data inspect PATH`` and ``zoo data convert IN... OUT``: look into a dataset, convert it to ASE-LMDB."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from zoo.datasets.base import LabelKeys
from zoo.datasets.tools import convert_to_aselmdb, inspect_dataset, open_dataset

HELP = "inspect a dataset (counts, elements, labels, neighbours) or convert it to ASE-LMDB"
EXAMPLES = """  zoo data inspect train.extxyz --cutoff 5
  zoo data inspect oc20/s2ef/train --cutoff 6          # a directory of OC20 .lmdb files
  zoo data convert train.extxyz valid.extxyz all.aselmdb --energy-key REF_energy --forces-key REF_forces
"""


def _add_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--energy-key", default="energy", help="key of the energy in info/calculator (eV)")
    parser.add_argument("--forces-key", default="forces", help="key of the forces in arrays/calculator (eV/Å)")
    parser.add_argument("--stress-key", default="stress", help="key of the stress in info/calculator (eV/Å³)")
    parser.add_argument("--charges-key", default="charges", help="key of per-atom charges in arrays (e)")
    parser.add_argument(
        "--require",
        nargs="*",
        default=[],
        choices=["energy", "forces", "stress", "charges"],
        help="labels every structure must have (a structure without one is reported as bad)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = sub.add_parser("inspect", help="counts, elements, energy/force statistics, neighbours at a cutoff")
    inspect.add_argument("paths", nargs="+", help="dataset file(s) or an OC20 LMDB directory")
    inspect.add_argument("--cutoff", type=float, help="also count neighbours within this radius (Å)")
    _add_keys(inspect)
    convert = sub.add_parser("convert", help="any supported format -> ASE-LMDB (fairchem's .aselmdb)")
    convert.add_argument("paths", nargs="+", help="input file(s), then the output .aselmdb file")
    _add_keys(convert)


def _keys(args: argparse.Namespace) -> LabelKeys:
    return LabelKeys(
        energy=args.energy_key,
        forces=args.forces_key,
        stress=args.stress_key,
        charges=args.charges_key,
        required=tuple(args.require),
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.action == "inspect":
        dataset = open_dataset(args.paths, keys=_keys(args))
        summary = inspect_dataset(dataset, cutoff=args.cutoff)
        table = Table(show_header=False, box=None)
        for label, value in summary.rows():
            table.add_row(label, value)
        console.print(table)
        for problem in summary.bad:
            print(f"bad: {problem}", file=sys.stderr)
        return 1 if summary.bad else 0
    if len(args.paths) < 2:
        raise ValueError("convert needs at least one input and the output file: zoo data convert IN... OUT")
    *inputs, out = args.paths
    dataset = open_dataset(inputs, keys=_keys(args))
    written, bad = convert_to_aselmdb(dataset, out)
    for problem in bad:
        print(f"bad: {problem}", file=sys.stderr)
    console.print(f"wrote {written} of {len(dataset)} structures to {out}" + (f"; {len(bad)} bad" if bad else ""))
    return 1 if bad else 0
