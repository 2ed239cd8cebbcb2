# Config -> plan (runs, evaluations), paths, wildcard constraints and the jobs' environment. Everything that can be
# decided in tested Python is decided in cassle.apps.plan; the rules only name files and one shell line per job.

import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import ExecMode

validate(config, str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))

from cassle.apps.launch import WORKFLOW_PID
from cassle.apps.launch.interrupts import forward_interrupts, interrupted
from cassle.apps.plan import EXTERNAL_NAME, PlanError, job_threads, launch_resources, missing_inputs, plan_workflow
from cassle.apps.tracking.store import tracking_uri
from cassle.data.roots import ENV_VAR as DATA_ROOTS_VAR, roots_to_environment
from cassle.evaluate import EVAL_TASKS

try:
    PLAN = plan_workflow(config)
except PlanError as error:
    raise WorkflowError(f"config error: {error}") from None

# This Snakemake runs one job inside a job that an executor plugin submitted (e.g. Snakemake's Slurm executor): the
# job is already on its node, so `cassle launch` runs it in-process.
IN_JOB = workflow.exec_mode == ExecMode.REMOTE
RESULTS = config["results"]
REPORTS = config["reports"]
CASSLE = f"{shlex.quote(sys.executable)} -m cassle"

# Jobs inherit these: moving data or the MLflow store changes no command line, so it reruns nothing.
os.environ[DATA_ROOTS_VAR] = roots_to_environment(config["data_roots"])
os.environ["MLFLOW_EXPERIMENT_NAME"] = config["mlflow"]["experiment"]
# The config's store, else cassle's default (sqlite:///<results>/mlflow.db), never one the calling shell names.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(Path(RESULTS), config["mlflow"]["tracking_uri"])
# A launcher whose Snakemake is gone (SIGKILL) leaves its job running for the rerun to re-attach, and exits.
os.environ[WORKFLOW_PID] = str(os.getpid())


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
    # Nothing is submitted when a job about to run lacks its data or checkpoint.
    jobs = [(job.rule.name, dict(job.wildcards)) for job in workflow.dag.needrun_jobs()]
    problems = missing_inputs(PLAN, jobs, config["data_roots"])
    if problems:
        raise WorkflowError("nothing was started; the jobs to run need:\n  " + "\n  ".join(problems))
    # SIGINT and SIGTERM to Snakemake reach every job (cassle launch cancels its Slurm job).
    forward_interrupts()
    # Create the MLflow store and its experiment once, before any job logs (concurrent first writers on a fresh
    # sqlite file would race). A store that cannot be reached only warns: results/ stays the source of truth.
    if config["mlflow"]["enabled"]:
        shell("{CASSLE} mlflow init --results {RESULTS} || echo 'cassle: warning: MLflow store not ready; "
              "results are still written, run `cassle mlflow sync` later'")


onerror:
    # A failed job (with keep-going: after every other job ended) still gets the report of whatever finished; missing
    # cells are shown as missing. Not after an interrupt: the user asked to stop.
    if not interrupted():
        shell("mkdir -p {RESULTS}/logs && {CASSLE} report --results {RESULTS} --out {REPORTS} >> {RESULTS}/logs/report.log 2>&1 && echo "
              "'cassle: the report of the jobs that finished is in {REPORTS}/README.md' || echo 'cassle: warning: "
              "the report of the jobs that finished failed; see {RESULTS}/logs/report.log'")
