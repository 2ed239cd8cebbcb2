"""The `cassle` command line (also `python -m cassle`): the top of the applications tier.

Each subcommand is a function taking the parsed arguments and returning an exit code. The command modules it
assembles (launch, report, mlflow, the evaluation registry) import nothing heavy; torch, torchvision and MLflow are
imported inside the functions that need them, so that `cassle --help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cassle import __version__
from cassle.apps import launch as launch_command
from cassle.apps.report import command as report_command
from cassle.apps.tracking import command as mlflow_command
from cassle.core.errors import CassleError
from cassle.core.observe import NullObserver, Terminated, observing, stop_on_sigterm
from cassle.evaluate import EVAL_TASKS, task_parser


def _data_check(args: argparse.Namespace) -> int:
    from cassle.data import check_roots, format_check_table  # torchvision: seconds

    results = check_roots(args.root)
    print(format_check_table(results))
    return 0


def _data_views(args: argparse.Namespace) -> int:
    from cassle.apps.report.views import draw_views_figure  # torch

    path = draw_views_figure(args.dataset, args.out, root=args.root, n_images=args.n, size=args.size, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from cassle.apps.engine import pretrain  # torch
    from cassle.config import load_config

    config = load_config(args.config, args.set)
    live = mlflow_command.live_run(args)
    with stop_on_sigterm(live.signalled if live else None):
        metrics = pretrain(config, args.out, args.work, progress=not args.quiet, observer=live)
    print(f"pretrained {config['framework']}-{config['variant']} for {metrics['steps']} steps -> {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    """`cassle eval TASK`: the task's `run`, observed by its live MLflow run when --mlflow asks for one."""
    live = mlflow_command.live_run(args)
    with stop_on_sigterm(live.signalled if live else None), observing(live or NullObserver()) as observer:
        observer.started(0, {})
        return args.task_run(args)


def _demo(args: argparse.Namespace) -> int:
    from cassle.apps.demo import run_demo  # torch (the views figure)

    return run_demo(args.workdir, cores=args.cores)


def build_parser() -> argparse.ArgumentParser:
    """The command tree. It imports no torch: the options of `cassle eval TASK` come from cassle.evaluate.options, and
    a task's module (torch, torchvision, scikit-learn) is imported only to run it."""
    parser = argparse.ArgumentParser(
        prog="cassle",
        description="Augmentation-aware self-supervised learning: pretrain vanilla / AugSelf / CASSLE models, "
        "evaluate them on the paper's downstream tasks, and build the paper's tables.",
        epilog="Run `cassle COMMAND --help` for the options of each command. The Snakemake workflow (Snakefile) "
        "chains these commands for every framework x variant.",
    )
    parser.add_argument("--version", action="version", version=f"cassle {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run the whole workflow on the embedded synthetic dataset (no download)",
                               description="Run the Snakemake DAG of config/demo.yaml: every framework x variant "
                               "pretrained for a few steps on the procedural `synthetic` dataset, every evaluation that "
                               "runs on it, the tables, figures, Snakemake report and MLflow store (about 6 minutes on 2 "
                               "CPU cores). Results land in WORKDIR/results/demo.")
    demo.add_argument("--workdir", type=Path, default=Path("."), help="folder holding results/demo (default: .)")
    demo.add_argument("--cores", type=int, default=2, help="CPU cores Snakemake may use (default: 2)")
    demo.set_defaults(run=_demo)

    pretrain = commands.add_parser("pretrain", help="pretrain one framework x variant",
                                   description="Pretrain a backbone with one framework (mocov2, simclr, barlow, "
                                   "mocov3, byol, simsiam, mocov1) and variant (vanilla, augself, cassle).")
    pretrain.add_argument("config", type=Path, nargs="?", default=None,
                          help="YAML config file (keys: docs/config.md); optional when --set gives every key needed")
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config key, value parsed as YAML (repeatable), e.g. --set epochs=10")
    pretrain.add_argument("--out", type=Path, required=True, help="run folder: backbone.pt, checkpoint.pt, "
                          "history.csv, metrics.json")
    pretrain.add_argument("--work", type=Path, default=None, help="resumable checkpoints (default: OUT/work); "
                          "rerunning the same command continues from the newest valid one")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar")
    mlflow_command.add_live_options(pretrain)
    pretrain.set_defaults(run=_pretrain)

    evaluate = commands.add_parser("eval", help="evaluate a frozen backbone on a downstream task",
                                   description="Evaluate a pretraining run (or a torchvision state_dict) on a "
                                   "downstream task; writes metrics.json into --out.")
    tasks = evaluate.add_subparsers(dest="task", metavar="TASK", required=True)
    for task, summary in EVAL_TASKS.items():
        sub = tasks.add_parser(task, help=summary, description=summary)
        task_parser(task, sub)
        mlflow_command.add_live_options(sub)
        sub.set_defaults(task_run=sub.get_default("run"), run=_eval)

    report = commands.add_parser("report", help="build the paper's tables and figures from results/",
                                 description="Read results/**/metrics.json and write the paper's tables (Markdown, "
                                 "LaTeX, CSV) and figures into a reports folder, without rerunning any job.")
    report_command.add_arguments(report)
    report.set_defaults(run=report_command.run)

    launch = commands.add_parser("launch", help="run a cassle command in-process or as a submitit / Slurm job",
                                 description="Run `cassle COMMAND ARGS` through a launcher: in-process (local), or "
                                 "submitted with submitit (local executor or Slurm), requeued on preemption and "
                                 "timeout, re-attached after a restart; the workflow starts every job this way.")
    launch_command.add_arguments(launch)
    launch.set_defaults(run=launch_command.run, entry=main, check=check_command)

    data = commands.add_parser("data", help="inspect datasets", description="Inspect the dataset registry.")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_commands.add_parser("check", help="report which datasets are present and valid under a root",
                                     description="Look for every registered dataset in ROOT/<name> and report "
                                     "whether it is present and valid.")
    check.add_argument("--root", type=Path, required=True, help="folder holding one sub-folder per dataset")
    check.set_defaults(run=_data_check)
    views = data_commands.add_parser("views", help="draw sampled views of a dataset annotated with their omega",
                                     description="Draw source images, two augmented views of each and the "
                                     "augmentation parameters (omega) recorded for every view.")
    views.add_argument("--dataset", default="synthetic", help="registered dataset name (default: synthetic)")
    views.add_argument("--root", type=Path, default=None, help="dataset root (not needed for synthetic)")
    views.add_argument("--out", type=Path, default=Path("results/demo/views.png"),
                       help="figure path, .png or .pdf (default: results/demo/views.png)")
    views.add_argument("--n", type=int, default=4, help="number of source images (default: 4)")
    views.add_argument("--size", type=int, default=96, help="view size in pixels (default: 96)")
    views.add_argument("--seed", type=int, default=0, help="seed of the augmentation generator (default: 0)")
    views.set_defaults(run=_data_views)

    mlflow = commands.add_parser("mlflow", help="mirror results/ into MLflow (init, log, sync)",
                                 description="MLflow is a mirror of results/, never the only copy: these commands "
                                 "create the store, log one result folder, or backfill everything missing.")
    mlflow_command.add_commands(mlflow.add_subparsers(dest="mlflow_command", metavar="ACTION", required=True))
    return parser


def check_command(argv: Sequence[str]) -> None:
    """Parse `cassle ARGV` with the real parser and, for pretrain, load and validate its config: `cassle launch`
    runs this (in a child process) before it submits anything. Exits non-zero with the parser's or the config
    loader's one-line message when something is wrong."""
    from cassle.config import ConfigError, load_config

    argv = list(argv)
    parsed = build_parser().parse_args(argv)
    if argv[0] == "pretrain":
        try:
            load_config(parsed.config, parsed.set)
        except (ConfigError, FileNotFoundError, ValueError) as error:
            raise SystemExit(f"cassle: error: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CassleError, FileNotFoundError, ValueError) as error:
        if os.environ.get("CASSLE_DEBUG"):
            raise
        print(f"cassle: error: {error}", file=sys.stderr)
        return 1
    except Terminated as stop:
        print(f"cassle: {stop}", file=sys.stderr)
        return 128 + stop.signum
