# Config -> plan (runs, evaluations), paths, wildcard constraints, launch resources and the MLflow environment.

import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))

from cassle.data.roots import ENV_VAR as DATA_ROOTS_VAR, roots_to_environment
from cassle.plan import EXTERNAL_NAME, PlanError, plan_workflow
from cassle.tracking.store import tracking_uri

try:
    PLAN = plan_workflow(config)
except PlanError as error:
    raise WorkflowError(f"config error: {error}") from None

RESULTS = config["results"]
REPORTS = config["reports"]
CASSLE = f"{shlex.quote(sys.executable)} -m cassle"

# Jobs inherit these: moving data or the MLflow store changes no command line, so it reruns nothing.
os.environ[DATA_ROOTS_VAR] = roots_to_environment(config["data_roots"])
os.environ["CASSLE_MLFLOW"] = "1" if config["mlflow"]["enabled"] else "0"
os.environ["MLFLOW_EXPERIMENT_NAME"] = config["mlflow"]["experiment"]
# The config's store, else cassle's default (sqlite:///<results>/mlflow.db), never one the calling shell names.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(Path(RESULTS), config["mlflow"]["tracking_uri"])


def launched(command):
    """Shell of a GPU job: `cassle COMMAND` through the profile's launcher, then its MLflow mirror. The mirror never
    fails the job (that would make Snakemake delete a finished result): a store that is down only warns, and
    `cassle mlflow sync` backfills it later. Placeholders stay unformatted here, so the rule's code (a rerun
    trigger) does not depend on the machine or the paths."""
    return (
        "{CASSLE} launch {resources.launch} --job-dir {params.out}/work -- " + command + " > {log} 2>&1; "
        'if [ "$CASSLE_MLFLOW" = 1 ]; then {CASSLE} mlflow log {params.out} --results {RESULTS} >> {log} 2>&1 '
        '|| echo "cassle: warning: MLflow logging of {params.out} failed; run cassle mlflow sync" >> {log}; fi'
    )


wildcard_constraints:
    run=r"[a-z0-9_]+-[a-z]+-[0-9a-f]{8}",
    source=rf"[a-z0-9_]+-[a-z]+-[0-9a-f]{{8}}|external-{EXTERNAL_NAME.pattern}",
    dataset=r"[A-Za-z0-9_]+",


def launch_resources(kind):
    """Snakemake resources of a GPU job: `launch` (the options of `cassle launch`, a string) plus the numbers
    Snakemake schedules with. Resources, unlike params, never make a finished job rerun."""
    spec = config["launch"].get(kind, {})
    args = ["--launcher", config["launcher"]]
    for key in ("gpus", "nodes", "cpus_per_task", "mem_gb", "time_min", "partition", "account", "qos", "constraint"):
        if spec.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(spec[key])]
    return {
        "launch": shlex.join(args),
        "gpus": spec.get("gpus", 0),
        "mem_mb": int(spec.get("mem_gb", 4) * 1024) if config["launcher"] == "local" else 512,
        "runtime": spec.get("time_min", 1440),  # minutes, as `cassle launch --time-min`
        "cluster_jobs": 0 if config["launcher"] == "local" else 1,
    }


def pretrain_dir(run):
    return f"{RESULTS}/pretrain/{run}"


def pretrain_outputs():
    return [f"{pretrain_dir(run)}/metrics.json" for run in PLAN.runs]


def eval_outputs():
    return [f"{e.out(Path(RESULTS))}/metrics.json" for evals in PLAN.evaluations.values() for e in evals]


def find_evaluation(task, wildcards):
    for evaluation in PLAN.evaluations.get(task, []):
        if evaluation.source == wildcards.source and evaluation.dataset == wildcards.dataset:
            return evaluation
    raise WorkflowError(f"no {task} evaluation of {wildcards.source} on {wildcards.dataset} in the config")


onstart:
    # Create the MLflow store and its experiment once, before any job logs (concurrent first writers on a fresh
    # sqlite file would race). A store that cannot be reached only warns: results/ stays the source of truth.
    if config["mlflow"]["enabled"]:
        shell("{CASSLE} mlflow init --results {RESULTS} || echo 'cassle: warning: MLflow store not ready; "
              "results are still written, run `cassle mlflow sync` later'")
