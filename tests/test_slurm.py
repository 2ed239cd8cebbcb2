"""The Slurm path against a real Slurm (../shared/tools/slurm-local/setup.sh: slurmctld, slurmdbd, sacct, two fake
GPUs): the workflow through sbatch with MLflow and the report, concurrent jobs logging live into one store (sqlite,
and a tracking server), preemption and requeue resuming bit for bit and continuing their MLflow run, every way a user
stops Snakemake, a killed Snakemake, a failed job, inputs checked before submission, Snakemake's own Slurm executor,
and a 2-task distributed pretraining job. Skipped where `sinfo` does not answer (a laptop)."""

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
import torch
import yaml

from cassle.core.io import read_csv_rows, read_json
from servers import mlflow_server

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


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not slurm_answers(), reason="no Slurm here (sinfo does not "
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


# ------------------------------------------------------------------------------------------------ the happy path

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
    job's history.csv holds the time its steps after the checkpoint were redone, the run their first logging)."""
    provenance = read_json(folder / "metrics.json")["provenance"]
    assert run.info.status == "FINISHED" and run.data.tags["cassle.live"] == "true", folder
    assert (run.info.start_time, run.info.end_time) == (ms(provenance["started_utc"]), ms(provenance["time_utc"]))
    rows = read_csv_rows(folder / "history.csv")
    for key in ("loss", "lr", "momentum", "samples_per_s", "epoch"):
        points = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in points) == [(int(row["step"]), float(row[key])) for row in rows], key
        stamps = {int(row["step"]): float(row["time"]) * 1000 for row in rows}
        assert not times or all(abs(m.timestamp - stamps[m.step]) < 2000 for m in points), key  # not mirrored


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


# ------------------------------------------------------------------------------------------------ stopping Snakemake

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
    write_config(workdir, workflow_config(evaluations=False))
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
    assert (workdir / "reports" / "README.md").is_file()


# ------------------------------------------------------------------------------------------------ one job

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
    requeued job for 120 s (PENDING, reason BeginTime), which this test need not wait for."""
    if requeue:
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True,
                                    text=True).stdout.split() == ["PENDING", "BeginTime"], f"job {job_id} requeued")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def relative_differences(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, float]:
    """||a - b|| / ||a|| per floating-point tensor."""
    return {key: ((value - other[key]).norm() / value.norm().clamp_min(1e-12)).item()
            for key, value in one.items() if value.is_floating_point()}


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
    wait_for(lambda: steps_done(single) >= 35 and "attempt 2" in log.read_text(), "the preempted job to come back")
    requeue_and_release(job_id)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    # Three starts. `scontrol requeue` restarts the job without submitit's checkpoint, so the third start prints
    # "attempt 2" again. The job ignores the requeue's SIGTERM: when it finishes within Slurm's KillWait, the launcher
    # sees it completed, and Slurm starts it once more (it resumes from its final checkpoint) after the launcher left.
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
    differences = relative_differences(expected, torch.load(double / "backbone.pt"))
    assert max(differences.values()) < 1e-3, sorted(differences.items(), key=lambda item: -item[1])[:5]
