"""Helpers of the tests against a real Slurm (../shared/tools/slurm-local/setup.sh: slurmctld, slurmdbd, sacct, two
fake GPUs): a tiny workflow config, Snakemake started and stopped as a user would, what squeue and sacct say, and
what a live MLflow run must hold. The tests are in three files (tests/test_slurm_workflow.py,
tests/test_slurm_jobs.py, tests/test_slurm_stopping.py), which one test worker runs one after another (they share the
one Slurm node: tests/conftest.py); `SLURM_MARKS` skips them where `sinfo` does not answer (a laptop)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cassle.core.io import read_csv_rows, read_json

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
CASSLE = [sys.executable, "-m", "cassle"]


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


SLURM_MARKS = [pytest.mark.slurm, pytest.mark.skipif(not slurm_answers(), reason="no Slurm here (sinfo does not "
                                                    "answer); ../shared/tools/slurm-local/setup.sh starts one")]


def workflow_config(max_steps: int = 6, evaluations: bool = True, variants: tuple[str, ...] = ("vanilla",),
                    **launch: dict) -> dict:
    """A tiny DAG (MoCo-v2 runs on synthetic data, one per variant, their linear evaluations, the report) sent to
    Slurm, polled every half second."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config.update(results="results", reports="reports", launcher="slurm", mlflow={"experiment": "cassle-slurm"})
    config["pretrain"]["defaults"].update(max_steps=max_steps, batch_size=16, queue_size=64, checkpoint_every=5,
                                          log_every=1, image_size=16)
    config["pretrain"]["groups"] = {"main": {"grid": {"framework": ["mocov2"], "variant": list(variants)}}}
    linear = config["evaluations"]["linear"]
    config["evaluations"] = {"linear": {**linear, "options": {**linear["options"], "max_images": 48}}} \
        if evaluations else {}
    resources = {"gpus": 0, "cpus_per_task": 1, "mem_gb": 1, "time_min": 10}
    config["launch"] = {"poll_s": 0.5, "pretrain": {**resources, **launch.get("pretrain", {})},
                        "eval": {**resources, **launch.get("eval", {})}}
    return config


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(REPO / "profiles" / "slurm"),
            "--configfile", str(workdir / "config.yaml"), *args]


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> str:
    done = subprocess.run(snakemake_command(workdir, *args), cwd=workdir, capture_output=True, text=True,
                          timeout=600, env=env)
    output = done.stdout + done.stderr
    assert not check or done.returncode == 0, output[-5000:]
    return output


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def job_ids(workdir: Path) -> dict[str, str]:
    """{run: Slurm job id} of the workflow's pretraining runs submitted so far."""
    return {record.parent.parent.name: read_json(record)["job_id"]
            for record in (workdir / "results" / "pretrain").glob("*/work/job.json")}


def squeue_states(ids: list[str]) -> dict[str, str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True)
    return dict(line.split() for line in done.stdout.splitlines()) if done.returncode == 0 else {}


def sacct(ids: list[str], field: str) -> dict[str, str]:
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", f"JobID,{field}", "-j", ",".join(ids)],
                          capture_output=True, text=True, check=True)
    return dict(line.split("|", 1) for line in done.stdout.splitlines())


def running(workdir: Path, runs: int = 1) -> bool:
    """Whether the job that each run's job.json names (the latest) runs now, for all `runs` runs."""
    ids = list(job_ids(workdir).values())
    states = squeue_states(ids)
    return len(ids) == runs and all(states.get(job) == "RUNNING" for job in ids)


def launchers_of(workdir: Path) -> list[int]:
    """Pids of the `cassle launch` processes working in this workflow's folder."""
    done = subprocess.run(["pgrep", "-f", "cassle launch"], capture_output=True, text=True)
    pids = [int(pid) for pid in done.stdout.split()]
    return [pid for pid in pids if Path(f"/proc/{pid}/cwd").exists() and
            os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(workdir)]


def start(workdir: Path) -> subprocess.Popen[str]:
    """Snakemake in its own process group (so that a test can signal the group as Ctrl-C does)."""
    return subprocess.Popen(snakemake_command(workdir), cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stopped(process: subprocess.Popen[str], stop: Callable[[subprocess.Popen[str]], object]) -> str:
    """Apply `stop` to the running Snakemake and return its output once it exited."""
    try:
        stop(process)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return output


def ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def without_mlflow_variables() -> dict[str, str]:
    """This environment without MLFLOW_* variables: a job's store is then the default one of its results folder."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}


def slurm_spans(ids: list[str]) -> list[tuple[int, int]]:
    """(start, end) in Unix seconds of each finished Slurm job, once sacct has recorded them (it can lag behind the
    launcher, which reads squeue: `Unknown` meanwhile)."""
    spans: list[tuple[int, int]] = []

    def recorded() -> bool:
        done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Start,End", "-j", ",".join(ids)],
                              capture_output=True, text=True, check=True, env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
        rows = [line.split("|") for line in done.stdout.splitlines()]
        if len(rows) != len(ids) or not all(field.isdigit() for row in rows for field in row):
            return False
        spans[:] = [(int(start), int(end)) for start, end in rows]
        return True

    wait_for(recorded, "sacct to record the jobs' start and end", timeout=120)
    return spans


def assert_overlapped(spans: list[tuple[int, int]]) -> None:
    """The jobs ran at the same time, at least for a moment (so they logged into the store concurrently)."""
    assert len(spans) >= 2 and max(start for start, _ in spans) < min(end for _, end in spans), spans


def assert_logged_live_once(client, run, folder: Path, times: bool = True) -> None:
    """`run` is the live run of the finished pretraining folder: FINISHED, its true start and end, every history.csv
    point of every metric in the store exactly once, stamped with the time its step was logged (`times`; a resumed
    job's history.csv holds the time and throughput of its steps after the checkpoint as redone, the run those of
    their first logging: for it, the samples/s points are compared by step only)."""
    provenance = read_json(folder / "metrics.json")["provenance"]
    assert run.info.status == "FINISHED" and run.data.tags["cassle.live"] == "true", folder
    assert (run.info.start_time, run.info.end_time) == (ms(provenance["started_utc"]), ms(provenance["time_utc"]))
    rows = read_csv_rows(folder / "history.csv")
    for key in ("loss", "lr", "momentum", "samples_per_s", "epoch"):
        points = client.get_metric_history(run.info.run_id, key)
        logged = sorted((m.step, m.value) for m in points)
        expected = [(int(row["step"]), float(row[key])) for row in rows]
        if not times and key == "samples_per_s":  # a measurement of the attempt that logged it
            logged, expected = [step for step, _ in logged], [step for step, _ in expected]
        assert logged == expected, key
        stamps = {int(row["step"]): float(row["time"]) * 1000 for row in rows}
        assert not times or all(abs(m.timestamp - stamps[m.step]) < 2000 for m in points), key  # not mirrored
