"""Slurm jobs as users preempt and requeue them: concurrent `cassle launch` jobs logging live into a tracking server,
USR2 preemption and `scontrol requeue` resuming bit for bit in the same MLflow run, a 2-task distributed job (every
way of stopping Snakemake: tests/test_slurm_stopping.py). Skipped where `sinfo` does not answer (a laptop)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from cassle.core.io import read_csv_rows, read_json
from servers import mlflow_server
from slurm_cluster import (CASSLE, REPO, SLURM_MARKS, assert_logged_live_once, assert_overlapped, slurm_spans,
                           squeue_states, wait_for, without_mlflow_variables)

pytestmark = SLURM_MARKS


def launch_pretrain(out: Path, *options: str, steps: int, cwd: Path | None = None, env: dict | None = None,
                    **variables: str) -> subprocess.Popen[str]:
    command = [*CASSLE, "launch", *options, "--job-dir", str(out / "work"), "--", "pretrain",
               str(REPO / "config" / "pretrain" / "tiny.yaml"), "--set", f"max_steps={steps}", "--set",
               "batch_size=32", "--set", "checkpoint_every=10", "--set", "log_every=1", "--set", "num_workers=0",
               "--set", "image_size=16", "--out", str(out), "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env={**(env or os.environ), **variables})


def steps_done(out: Path) -> int:
    history = out / "history.csv"
    rows = read_csv_rows(history) if history.exists() else []
    return int(rows[-1]["step"]) if rows else 0



def requeue_and_release(job_id: str, requeue: bool = True) -> None:
    """`scontrol requeue` the job (unless it requeued itself), then let it start again at once: Slurm holds a
    requeued job for 120 s (PENDING, reason BeginTime), which this test need not wait for. The job is suspended first,
    which fails unless it still runs, so that it cannot finish between the test's look and the requeue."""
    if requeue:
        subprocess.run(["scontrol", "suspend", job_id], check=True)
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        subprocess.run(["scontrol", "release", job_id], check=True)  # Slurm holds a job requeued while suspended
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True,
                                    text=True).stdout.split() == ["PENDING", "BeginTime"], f"job {job_id} requeued")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def weight_differences(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||a|| over all floating-point weights together."""
    keys = [key for key, value in one.items() if value.is_floating_point()]
    a, b = (torch.cat([weights[key].flatten() for key in keys]) for weights in (one, other))
    return ((a - b).norm() / a.norm()).item()


def test_preemption_and_requeue_resume_bit_for_bit_and_two_tasks_match_one_process(tmp_path: Path):
    """The same run (global batch 32) three times: in-process on one thread (the reference); as a Slurm job that is
    preempted (USR2, as Slurm sends before a time limit or preemption) and later requeued by `scontrol requeue`,
    which must end bit-identical to the reference; and as a 2-task job on the two fake GPUs (two processes, gloo on
    the CPU, rendezvous from the Slurm environment), requeued once, whose loss curve and weights match the reference
    within floating-point tolerance."""
    steps = 60
    reference = launch_pretrain(tmp_path / "reference", "--launcher", "local", steps=steps, OMP_NUM_THREADS="1")
    assert reference.wait(timeout=600) == 0, reference.stdout.read()
    expected = torch.load(tmp_path / "reference" / "backbone.pt")

    results = tmp_path / "results"
    single = results / "pretrain" / "mocov2-cassle-0000bbb1"  # logged live: the requeued job resumes its run
    job = launch_pretrain(single, "--launcher", "slurm", "--poll-s", "0.5", "--cpus-per-task", "1", "--mlflow",
                          str(results), steps=steps, env=without_mlflow_variables())
    wait_for(lambda: steps_done(single) >= 15, "the single-task job to train")
    job_id = read_json(single / "work" / "job.json")["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # submitit requeues the job itself
    requeue_and_release(job_id, requeue=False)
    log = single / "work" / "submitit" / job_id / f"{job_id}_0_log.out"
    wait_for(lambda: steps_done(single) >= 25 and "attempt 2" in log.read_text(), "the preempted job to come back")
    requeue_and_release(job_id)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    # Three starts. The job ignores the requeue's SIGTERM (submitit): when it finishes within Slurm's KillWait, the
    # launcher sees it completed, and Slurm starts it once more (it resumes from its final checkpoint) after the
    # launcher left.
    wait_for(lambda: not squeue_states([job_id]), "the requeued job to end")
    assert log.read_text().count("Starting with JobEnvironment") == 3
    got = torch.load(single / "backbone.pt")
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cassle").experiment_id])
    assert_logged_live_once(client, run, single, times=False)

    double = tmp_path / "double"
    job = launch_pretrain(double, "--launcher", "slurm", "--poll-s", "0.5", "--gpus", "2", "--cpus-per-task", "1",
                          steps=steps)
    wait_for(lambda: steps_done(double) >= 20, "the 2-task job to train")
    double_id = read_json(double / "work" / "job.json")["job_id"]
    requeue_and_release(double_id)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    wait_for(lambda: not squeue_states([double_id]), "the requeued 2-task job to end")  # as the single-task one
    metrics = read_json(double / "metrics.json")
    assert metrics["world_size"] == 2 and metrics["resumed"]
    reference_losses = [float(row["loss"]) for row in read_csv_rows(tmp_path / "reference" / "history.csv")]
    losses = {int(row["step"]): float(row["loss"]) for row in read_csv_rows(double / "history.csv")}
    assert sorted(losses) == list(range(1, steps + 1))
    torch.testing.assert_close(torch.tensor([losses[s] for s in sorted(losses)]), torch.tensor(reference_losses),
                               rtol=1e-3, atol=1e-4)
    # 60 SGD steps amplify the rounding of a 2-way all-reduce: small tensors (BatchNorm biases) drift by ~5e-3 of
    # their own size, single weights by ~1e-3, the model as a whole by ~2e-4
    assert weight_differences(expected, torch.load(double / "backbone.pt")) < 1e-3


def test_cassle_launch_on_slurm_logs_concurrent_jobs_live_into_a_tracking_server(tmp_path: Path):
    """Two `cassle launch --launcher slurm --mlflow results -- pretrain` jobs, submitted from the folder that holds
    `results` (relative paths, as the workflow gives them), run at once and log live into a `mlflow server`: the
    option reaches the jobs, and both runs are complete, once, with their true times."""
    with mlflow_server(tmp_path / "server.db", tmp_path) as base:
        env = {**without_mlflow_variables(), "MLFLOW_TRACKING_URI": base, "MLFLOW_EXPERIMENT_NAME": "cassle-server"}
        names = ["mocov2-cassle-0000aaa1", "mocov2-cassle-0000aaa2"]
        jobs = [launch_pretrain(Path("results") / "pretrain" / name, "--launcher", "slurm", "--poll-s", "0.5",
                                "--cpus-per-task", "1", "--mlflow", "results", steps=40, cwd=tmp_path, env=env)
                for name in names]
        outputs = [job.communicate(timeout=600)[0] for job in jobs]
        assert [job.returncode for job in jobs] == [0, 0], outputs
        folders = [tmp_path / "results" / "pretrain" / name for name in names]
        assert_overlapped(slurm_spans([read_json(folder / "work" / "job.json")["job_id"] for folder in folders]))

        from mlflow.tracking import MlflowClient

        client = MlflowClient(base)
        experiment = client.get_experiment_by_name("cassle-server")
        logged = client.search_runs([experiment.experiment_id])
        assert sorted(run.data.tags["cassle.result"] for run in logged) == [f"pretrain/{name}" for name in names]
        for run in logged:
            assert_logged_live_once(client, run, tmp_path / "results" / run.data.tags["cassle.result"])
