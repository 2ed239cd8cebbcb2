"""`cassle mlflow init | log | log-reports | sync | ui-command`: the command line of the MLflow mirror; and the
`--mlflow RESULTS` options with which `cassle pretrain` and `cassle eval` log live. Nothing imported here imports
mlflow (seconds): the tracking modules import it where they touch a store."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from cassle.apps.tracking.live import LiveRun
from cassle.apps.tracking.runs import log_reports, log_result
from cassle.apps.tracking.store import default_experiment, init_store, is_http, tracking_uri
from cassle.apps.tracking.sync import sync

_STORE_HELP = ("The store is --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///RESULTS/mlflow.db (a sqlite "
               "store keeps its artifacts in mlartifacts/ next to the database). Files in RESULTS stay the source of "
               "truth; docs/mlflow.md explains the mirror.")


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder (pretrain/<run>/, eval/<task>/<run>/<dataset>/; default: results)")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI, e.g. http://host:5000 or sqlite:////abs/mlflow.db "
                        "(default: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS/mlflow.db)")
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else cassle)")


def _store(args: argparse.Namespace) -> tuple[str, str]:
    return tracking_uri(args.results, args.tracking_uri), args.experiment or default_experiment()


def _printing_warnings(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``action`` and print every warning it raised as one `cassle: warning: ...` line on stderr."""
    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return action(args)
            finally:  # also when the action raises: the warnings may tell why
                for warning in caught:
                    print(f"cassle: warning: {warning.message}", file=sys.stderr)
    return run


def ui_command(uri: str) -> str:
    """The shell command that opens the MLflow UI on ``uri`` (a tracking server: its address)."""
    if is_http(uri):
        return f"# {uri} is a tracking server: open it in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port 5000"


def ui_address(uri: str, experiment_id: str) -> str:
    """The UI page of the experiment's runs table, served by `ui_command(uri)` (or by the tracking server `uri`).
    MLflow 3.17's UI opens an experiment on its GenAI overview unless the address asks for the model-training view
    (`workflowType=machine_learning`; the browser keeps no such choice from a link)."""
    base = uri.rstrip("/") if is_http(uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _init(args: argparse.Namespace) -> int:
    uri, experiment = _store(args)
    experiment_id = init_store(uri, experiment)
    print(f"MLflow store {uri}: experiment {experiment!r} has id {experiment_id}")
    print(f"open it with: {ui_command(uri)}")
    print(f"then browse:  {ui_address(uri, experiment_id)}")
    return 0


def _log(args: argparse.Namespace) -> int:
    uri, experiment = _store(args)
    run_id = log_result(args.dir, args.results, uri, experiment)
    if run_id is not None:
        print(f"{args.dir} is MLflow run {run_id} in {uri} (experiment {experiment!r})")
    return 0


def _log_reports(args: argparse.Namespace) -> int:
    uri, experiment = _store(args)
    run_id = log_reports(args.dir, uri, experiment)
    if run_id is not None:
        print(f"{args.dir} is MLflow run {run_id} in {uri} (experiment {experiment!r})")
    return 0


def _sync(args: argparse.Namespace) -> int:
    uri, experiment = _store(args)
    if not args.results.is_dir():
        raise FileNotFoundError(f"results folder {args.results} does not exist; pass the folder the jobs wrote "
                                "with --results")
    report = sync(args.results, uri, experiment)
    print(report)
    return 0 if report.ok else 1


def _ui_command(args: argparse.Namespace) -> int:
    print(ui_command(_store(args)[0]))
    return 0


def _action(subparsers: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int], help: str,
            description: str, dir_help: str | None = None) -> None:
    """One `cassle mlflow NAME` action: its DIR argument (when `dir_help`), the store options, and `run`."""
    parser = subparsers.add_parser(name, help=help, description=f"{description} {_STORE_HELP}")
    if dir_help:
        parser.add_argument("dir", type=Path, metavar="DIR", help=dir_help)
    _store_options(parser)
    parser.set_defaults(run=run)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the `cassle mlflow` actions."""
    _action(subparsers, "init", _printing_warnings(_init),
            help="create the store and the experiment (once, before any job logs)",
            description="Create the MLflow store (for sqlite: the database file and its tables) and the experiment, "
            "and print how to open the UI. The workflow runs this once before its jobs; concurrent calls are safe.")
    _action(subparsers, "log", _printing_warnings(_log), help="log one pretraining or evaluation folder (idempotent)",
            description="Log one result folder as an MLflow run: params, per-step metrics (history.csv), final "
            "metrics, tags and artifacts (metrics.json, history.csv, figures). An evaluation is a child run of its "
            "pretraining run, which is logged first when needed. A folder already logged with the same metrics.json "
            "is not logged again. When the store cannot be reached this warns and exits 0 (the job's files are "
            "intact; `cassle mlflow sync` backfills later).",
            dir_help="RESULTS/pretrain/<run> or RESULTS/eval/<task>/<run>/<dataset>")
    _action(subparsers, "log-reports", _printing_warnings(_log_reports),
            help="log a reports folder (tables, figures) as its own run",
            description="Log a reports folder (tables, figures, README, report.html, as written by `cassle report`) "
            "as one run named after the folder; logged again only when a file changed.",
            dir_help="reports folder (e.g. reports)")
    _action(subparsers, "sync", _printing_warnings(_sync), help="backfill the store with every result folder it lacks",
            description="Log every finished result folder of RESULTS that the store lacks (or holds with an older "
            "metrics.json), pretraining runs first; print how many were logged, already present and failed. "
            "Idempotent: a second sync logs nothing. Exits 1 when any folder failed.")
    _action(subparsers, "ui-command", _ui_command, help="print the `mlflow ui` command that opens the store",
            description="Print the exact `mlflow ui --backend-store-uri ...` command for the store (or the address "
            "of a tracking server).")


def add_live_options(parser: argparse.ArgumentParser) -> None:
    """`--mlflow RESULTS` and `--mlflow-system-metrics` of a job that logs live (`cassle pretrain`, `cassle eval`)."""
    group = parser.add_argument_group("live MLflow run (docs/mlflow.md)")
    group.add_argument("--mlflow", type=Path, default=None, metavar="RESULTS",
                       help="log this job live as an MLflow run: it appears when the job starts (RUNNING), its metrics "
                       "as they come, its end status (FINISHED, FAILED, KILLED); RESULTS is the results root holding "
                       "--out. Store: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS/mlflow.db; experiment: "
                       "$MLFLOW_EXPERIMENT_NAME, else cassle. A store that is down only warns")
    group.add_argument("--mlflow-system-metrics", action="store_true",
                       help="with --mlflow: also log CPU, memory, disk, network and (where NVML finds one) GPU "
                       "utilisation and memory as system/... metrics")


def live_run(args: argparse.Namespace) -> LiveRun | None:
    """The live run that `--mlflow` asks for (None without it), for the folder `args.out`. A folder outside the
    layout of RESULTS raises ValueError here, before the job starts."""
    if args.mlflow is None:
        if args.mlflow_system_metrics:
            raise ValueError("--mlflow-system-metrics needs --mlflow RESULTS (the store to log into)")
        return None
    return LiveRun(args.out, args.mlflow, tracking_uri(args.mlflow), default_experiment(),
                   system_metrics=args.mlflow_system_metrics)
