"""The workflow against a real Slurm: through sbatch with live MLflow runs and the report, a failed job, inputs
checked before submission, Snakemake's own Slurm executor. Skipped where `sinfo` does not answer (a laptop)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cassle.core.io import read_json
from slurm_cluster import (SLURM_MARKS, SNAKEMAKE, assert_logged_live_once, assert_overlapped, job_ids, ms, sacct,
                           slurm_spans, snakemake, workflow_config, write_config)

pytestmark = SLURM_MARKS


def test_the_workflow_runs_through_sbatch_with_mlflow_and_the_report(tmp_path: Path):
    """Jobs are named after their run and dataset, their thread pools follow cpus_per_task (not the OMP_NUM_THREADS=1
    that Snakemake gives the launcher), and the report is built. The two pretraining jobs run at once (one CPU each)
    and log live into the default sqlite store: each run is complete, once, with its true times; each evaluation is a
    live child run of its pretraining run; `mlflow.system_metrics` reaches the jobs."""
    config = workflow_config(variants=("vanilla", "cassle"), eval={"cpus_per_task": 2})
    config["mlflow"]["system_metrics"] = True
    write_config(tmp_path, config)
    snakemake(tmp_path)
    runs = sorted((tmp_path / "results" / "pretrain").glob("*/metrics.json"))
    assert len(runs) == 2 and (tmp_path / "reports" / "README.md").is_file()
    for metrics in map(read_json, runs):
        assert metrics["provenance"]["threads"] == 1 and metrics["provenance"]["slurm_job_id"]
    ids = job_ids(tmp_path)
    for run in ids:  # states come from squeue while sacct catches up: never UNKNOWN
        history = (tmp_path / "results" / "pretrain" / run / "work" / "launch.log").read_text()
        assert ("PENDING" in history or "RUNNING" in history) and "UNKNOWN" not in history
    names = sacct(list(ids.values()), "JobName")
    assert {names[job] for job in ids.values()} == {f"cassle-pretrain-{run}" for run in ids}
    assert_overlapped(slurm_spans(list(ids.values())))
    evals = {path.parent.relative_to(tmp_path / "results"): read_json(path)
             for path in (tmp_path / "results" / "eval" / "linear").glob("*/synthetic/metrics.json")}
    assert len(evals) == 2 and all(e["provenance"]["threads"] == 2 for e in evals.values())
    eval_names = sacct([e["provenance"]["slurm_job_id"] for e in evals.values()], "JobName").values()
    assert sorted(eval_names) == sorted(f"cassle-eval-linear-{run}-synthetic" for run in ids)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cassle-slurm")
    found = client.search_runs([experiment.experiment_id])
    logged = {run.data.tags["cassle.result"]: run for run in found}
    assert len(found) == len(logged) == 5  # the two pretraining runs, their evaluations, the report: none twice
    for run in ids:
        assert_logged_live_once(client, logged[f"pretrain/{run}"], tmp_path / "results" / "pretrain" / run)
        assert "system/cpu_utilization_percentage" in logged[f"pretrain/{run}"].data.metrics  # mlflow.system_metrics
    for folder, record in evals.items():
        child = logged[str(folder)]
        assert child.info.status == "FINISHED" and child.data.tags["cassle.live"] == "true"
        assert child.data.tags["mlflow.parentRunId"] == logged[f"pretrain/{folder.parts[2]}"].info.run_id
        assert child.info.start_time <= ms(record["provenance"]["started_utc"]) < child.info.end_time


# ------------------------------------------------------------------------------------------------ failures

def test_a_failed_job_names_its_error_and_the_report_covers_what_finished(tmp_path: Path):
    config = workflow_config()
    config["evaluations"]["linear"]["options"]["max_images"] = 0  # parses, then fails inside the job
    write_config(tmp_path, config)
    output = snakemake(tmp_path, check=False)
    assert "cassle: error: max_images must be a positive number of images" in output
    assert "the report of the jobs that finished is in reports/README.md" in output
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert "mocov2" in readme and len(list((tmp_path / "results" / "pretrain").glob("*/metrics.json"))) == 1


def test_missing_data_stops_the_workflow_before_any_submission(tmp_path: Path):
    config = workflow_config()
    config["evaluations"]["linear"]["datasets"] = ["cifar10"]
    config["data_roots"] = {"cifar10": str(tmp_path / "nowhere")}
    write_config(tmp_path, config)
    output = snakemake(tmp_path, check=False)
    assert "nothing was started" in output and "dataset 'cifar10': the root folder does not exist" in output
    assert not (tmp_path / "results" / "pretrain").exists()  # no job was submitted


# ------------------------------------------------------------------------------------------------ the two routes

def test_snakemakes_own_slurm_executor_runs_the_same_workflow(tmp_path: Path):
    """A site profile named `slurm` that says `executor: slurm`: each job is one Slurm job with the config's
    resources, in which `cassle launch` runs the command in-process."""
    site = tmp_path / "xdg" / "snakemake" / "slurm"
    site.mkdir(parents=True)
    (site / "config.yaml").write_text("executor: slurm\njobs: 4\nlatency-wait: 10\n"
                                      "slurm-init-seconds-before-status-checks: 2\n")
    workdir = tmp_path / "workdir"
    site_settings = {"gpus": 1, "cpus_per_task": 2, "mem_gb": 2, "time_min": 7, "partition": "debug",
                     "account": "root"}
    write_config(workdir, workflow_config(evaluations=False, pretrain=site_settings))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--profile", "slurm", "--configfile",
                           str(workdir / "config.yaml")], cwd=workdir, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    for log in (workdir / "results" / "logs" / "pretrain").glob("*.log"):
        text = log.read_text()
        assert "pretrained mocov2" in text and "submitted job" not in text  # in-process, inside the Slurm job
    metrics = [read_json(path) for path in (workdir / "results" / "pretrain").glob("*/metrics.json")]
    assert len(metrics) == 1 and metrics[0]["provenance"].get("slurm_job_id")
    job = metrics[0]["provenance"]["slurm_job_id"]
    fields = "Partition,Account,AllocCPUS,ReqMem,Timelimit,AllocTRES"
    granted = dict(zip(fields.split(","), sacct([job], fields)[job].split("|")))
    assert granted["Partition"] == "debug" and granted["Account"] == "root" and granted["AllocCPUS"] == "2", granted
    assert granted["ReqMem"] in ("2G", "2048M") and granted["Timelimit"] == "00:07:00", granted
    assert "gres/gpu=1" in granted["AllocTRES"] and metrics[0]["provenance"]["threads"] == 2, granted
    assert (workdir / "reports" / "README.md").is_file()
