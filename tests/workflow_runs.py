"""Helpers of the tests that run the Snakemake workflow for real (tests/test_workflow.py,
tests/test_workflow_configs.py): the tiny DAG's config, Snakemake run in a work folder, and the job counts of its
output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tiny_demo() -> dict:
    """config/demo.yaml cut down: MoCo-v2 vanilla and CASSLE, 6 steps, the linear evaluation only."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config.update(results="results", reports="reports", mlflow={"experiment": "cassle-test"})
    config["pretrain"]["defaults"].update(max_steps=6, batch_size=16, queue_size=64, checkpoint_every=2, log_every=1)
    config["pretrain"]["groups"] = {"main": {"grid": {"framework": ["mocov2"], "variant": ["vanilla", "cassle"]}}}
    linear = config["evaluations"]["linear"]
    config["evaluations"] = {"linear": {**linear, "options": {**linear["options"], "max_images": 64}}}
    return config


def job_stats(output: str) -> dict[str, int]:
    """The `Job stats` table of a Snakemake run or dry run, as {rule: count} (without the total)."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


def task_stats(output: str) -> dict[str, int]:
    """Evaluation jobs per task in a Snakemake run or dry run, from the `wildcards: task=...` line of each job."""
    counts: dict[str, int] = {}
    for task in re.findall(r"wildcards: task=(\w+),", output):
        counts[task] = counts.get(task, 0) + 1
    return counts


def snakemake(workdir: Path, *args: str, check: bool = True, cwd: Path | None = None) -> str:
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    result = subprocess.run(command, cwd=cwd or workdir, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, output[-4000:]
    return output


TINY = tiny_demo()
