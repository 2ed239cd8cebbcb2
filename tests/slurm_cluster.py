"""Helpers of the tests against a real Slurm (../shared/tools/slurm-local/setup.sh: slurmctld, slurmdbd, sacct, two
fake GPUs): a tiny workflow config, Snakemake started and stopped as a user would, and what squeue and sacct say.
The tests are split over two files (tests/test_slurm_workflow.py, tests/test_slurm_jobs.py) so that two test workers
share them; `SLURM_MARKS` skips them where `sinfo` does not answer (a laptop)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cassle.core.io import read_json

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


def workflow_config(max_steps: int = 6, evaluations: bool = True, **launch: dict) -> dict:
    """A tiny DAG (one MoCo-v2 run on synthetic data, its linear evaluation, the report) sent to Slurm, polled every
    half second."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config.update(results="results", reports="reports", launcher="slurm", mlflow={"experiment": "cassle-slurm"})
    config["pretrain"]["defaults"].update(max_steps=max_steps, batch_size=16, queue_size=64, checkpoint_every=5,
                                          log_every=1, image_size=16)
    config["pretrain"]["groups"] = {"main": {"grid": {"framework": ["mocov2"], "variant": ["vanilla"]}}}
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
