# Config -> plan (runs, evaluations), paths, wildcard constraints and the jobs' environment. Everything that can be
# decided in tested Python is decided in cassle.apps.plan; the rules only name files and one shell line per job.

import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))

from cassle.apps.plan import EXTERNAL_NAME, PlanError, launch_resources, plan_workflow
from cassle.apps.tracking.store import tracking_uri
from cassle.data.roots import ENV_VAR as DATA_ROOTS_VAR, roots_to_environment
from cassle.evaluate import EVAL_TASKS

try:
    PLAN = plan_workflow(config)
except PlanError as error:
    raise WorkflowError(f"config error: {error}") from None

RESULTS = config["results"]
REPORTS = config["reports"]
CASSLE = f"{shlex.quote(sys.executable)} -m cassle"

# Jobs inherit these: moving data or the MLflow store changes no command line, so it reruns nothing.
os.environ[DATA_ROOTS_VAR] = roots_to_environment(config["data_roots"])
os.environ["MLFLOW_EXPERIMENT_NAME"] = config["mlflow"]["experiment"]
# The config's store, else cassle's default (sqlite:///<results>/mlflow.db), never one the calling shell names.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(Path(RESULTS), config["mlflow"]["tracking_uri"])


wildcard_constraints:
    run=r"[a-z0-9_]+-[a-z]+-[0-9a-f]{8}",
    source=rf"[a-z0-9_]+-[a-z]+-[0-9a-f]{{8}}|external-{EXTERNAL_NAME.pattern}",
    task="|".join(EVAL_TASKS),
    dataset=r"[A-Za-z0-9_]+",


def pretrain_dir(run):
    return f"{RESULTS}/pretrain/{run}"


def pretrain_outputs():
    return [f"{pretrain_dir(run)}/metrics.json" for run in PLAN.runs]


def eval_outputs():
    return [f"{e.out(Path(RESULTS))}/metrics.json" for evals in PLAN.evaluations.values() for e in evals]


onstart:
    # Create the MLflow store and its experiment once, before any job logs (concurrent first writers on a fresh
    # sqlite file would race). A store that cannot be reached only warns: results/ stays the source of truth.
    if config["mlflow"]["enabled"]:
        shell("{CASSLE} mlflow init --results {RESULTS} || echo 'cassle: warning: MLflow store not ready; "
              "results are still written, run `cassle mlflow sync` later'")
