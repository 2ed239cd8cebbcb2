"""`cassle report`: the paper's tables and figures from the results on disk (no MLflow, no rerun)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle report`."""
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder holding pretrain/<run>/ and eval/<task>/<run>/<dataset>/ "
                        "(default: results)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="reports folder: tables/, figures/, README.md (default: reports)")
    parser.add_argument("--paper", action="store_true",
                        help="show the paper's printed value and our difference next to each of our values "
                        "(where the setup is the paper's)")
    parser.add_argument("--format", default="md,tex,csv",
                        help="comma-separated table formats among md, tex, csv (default: all three)")
    parser.add_argument("--no-figures", action="store_true", help="build the tables and the index only")


def run(args: argparse.Namespace) -> int:
    """Build everything and print where it went."""
    from cassle.apps.report.build import build_report

    files = build_report(args.results, args.out, paper=args.paper, formats=args.format.split(","),
                         figures=not args.no_figures)
    for stem, paths in files.items():
        suffixes = ",".join(path.suffix.lstrip(".") for path in paths)
        where = paths[0].with_suffix("") if len(paths) > 1 else paths[0]
        print(f"{stem}: {where}{'.{' + suffixes + '}' if len(paths) > 1 else ''}")
    return 0
