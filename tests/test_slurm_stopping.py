"""Snakemake stopped as users stop it while its Slurm jobs run: SIGINT to the pid or the group (Ctrl-C), SIGTERM,
a double Ctrl-C, SIGKILL then a rerun. Skipped where `sinfo` does not answer (a laptop)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from cassle.core.io import read_json
from slurm_cluster import (SLURM_MARKS, job_ids, launchers_of, running, sacct, snakemake, squeue_states, start,
                           stopped, wait_for, workflow_config, write_config)

pytestmark = SLURM_MARKS


def test_every_way_of_stopping_snakemake_cancels_its_slurm_jobs_and_a_rerun_finishes(tmp_path: Path):
    """One workflow, stopped five times while its Slurm job runs. SIGINT to Snakemake's pid alone, SIGINT to its
    process group (Ctrl-C), SIGTERM and a double Ctrl-C: each cancels the jobs and exits without a traceback. SIGKILL
    (a lost login session): the jobs go on, no launcher is left waiting, and the rerun (after `--unlock`)
    re-attaches to them instead of submitting twice. Every restart resumes the runs from their checkpoints; the last
    one finishes."""
    write_config(tmp_path, workflow_config(max_steps=600, evaluations=False))
    stops = {
        "SIGINT to the pid": lambda p: os.kill(p.pid, signal.SIGINT),
        "SIGINT to the group": lambda p: os.killpg(p.pid, signal.SIGINT),
        "SIGTERM to the pid": lambda p: os.kill(p.pid, signal.SIGTERM),
        "double Ctrl-C": lambda p: (os.killpg(p.pid, signal.SIGINT), time.sleep(0.3), os.killpg(p.pid, signal.SIGINT)),
    }
    for how, stop in stops.items():
        process = start(tmp_path)
        wait_for(lambda: running(tmp_path), f"a running job before the {how}")
        ids = list(job_ids(tmp_path).values())
        output = stopped(process, stop)
        assert process.returncode != 0 and "Traceback" not in output, f"{how}:\n{output[-4000:]}"
        assert "cancelled job" in output, how
        wait_for(lambda: not squeue_states(ids), f"the jobs to end after the {how}", timeout=60)
        assert all(state.startswith("CANCELLED") for state in sacct(ids, "State").values()), how
        assert not launchers_of(tmp_path), how

    process = start(tmp_path)
    wait_for(lambda: running(tmp_path), "a running job before SIGKILL")
    ids = job_ids(tmp_path)
    stopped(process, lambda p: os.kill(p.pid, signal.SIGKILL))
    wait_for(lambda: not launchers_of(tmp_path), "the launchers of a killed Snakemake to leave", timeout=60)
    assert set(squeue_states(list(ids.values())).values()) == {"RUNNING"}  # the jobs go on
    subprocess.run(["scontrol", "suspend", ",".join(ids.values())], check=True)  # still there when the rerun looks
    snakemake(tmp_path, "--unlock")
    rerun = start(tmp_path)
    history = {run: tmp_path / "results" / "pretrain" / run / "work" / "launch.log" for run in ids}
    wait_for(lambda: all(f"re-attaching to job {job}" in history[run].read_text() for run, job in ids.items()),
             "the rerun to re-attach to the jobs of the killed Snakemake")
    subprocess.run(["scontrol", "resume", ",".join(ids.values())], check=True)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-4000:]
    assert job_ids(tmp_path) == ids  # no second job was submitted into a run's folder
    for run in ids:
        log = history[run].read_text()
        assert log.count("submitted job") == 5 and log.count("cancelled job") == 4  # every attempt, kept
        assert read_json(tmp_path / "results" / "pretrain" / run / "metrics.json")["steps"] == 600


