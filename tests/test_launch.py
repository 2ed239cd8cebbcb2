"""`cassle launch`: the in-process launcher, real submitit-local jobs (completion, failure, preemption and requeue,
re-attach, cancel on SIGTERM) running a tiny real pretraining, and how Slurm options become sbatch lines."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cassle.apps.cli import build_parser, main
from cassle.apps.launch import resources_from_args
from cassle.apps.launch.jobs import SlurmHandle, new_record, read_record, submitit_folder, write_record
from cassle.apps.launch.resources import Resources, executor_parameters, make_executor, parse_slurm_extra
from cassle.apps.launch.task import CassleTask
from cassle.core.errors import CassleError
from cassle.core.io import read_csv_rows, read_json

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "config" / "pretrain" / "tiny.yaml"
STEPS = 8


def pretrain_argv(out: Path, *sets: str) -> list[str]:
    sets = (f"max_steps={STEPS}", "batch_size=16", "checkpoint_every=2", "num_workers=0", "log_every=1", *sets)
    return ["pretrain", str(TINY), *[arg for item in sets for arg in ("--set", item)], "--out", str(out), "--quiet"]


def launch_argv(out: Path, *sets: str, launcher: str = "submitit-local") -> list[str]:
    return ["launch", "--launcher", launcher, "--job-dir", str(out / "work"), "--", *pretrain_argv(out, *sets)]


def wait_for(condition: Callable[[], object], what: str, launcher: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `condition()` is true; fail when `launcher` exits first (a 300 s limit keeps a broken run from
    hanging the suite)."""
    deadline = time.monotonic() + 300
    while not condition():
        if launcher is not None and launcher.poll() is not None:
            raise AssertionError(f"cassle launch exited with code {launcher.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(field) for field in listing.stdout.split()]


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    probe = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return probe.returncode == 0 and not probe.stdout.strip().startswith("Z")


def job_folders(out: Path) -> list[str]:
    """The jobs submitted for a run (submitit-local's controller also leaves an empty literal `%j` folder)."""
    return sorted(path.name for path in (out / "work" / "submitit").iterdir() if path.name.isdigit())


def job_log(out: Path, job_id: str, task: int = 0) -> str:
    return (out / "work" / "submitit" / job_id / f"{job_id}_{task}_log.out").read_text()


def stub_commands(folder: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """Put shell scripts named after the keywords (e.g. srun, sacct) first on PATH."""
    folder.mkdir()
    for name, body in scripts.items():
        stub = folder / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def launch_subprocess(out: Path, logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / "launch.out", "wb") as stdout, open(logs / "launch.err", "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "cassle", *launch_argv(out)], stdout=stdout, stderr=stderr)


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted submitit-local pretraining run: the reference of the preemption test."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(launch_argv(out)) == 0
    return out


def test_local_launcher_runs_the_command_in_this_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["launch", "--", *pretrain_argv(out, "max_steps=3")]) == 0
    assert read_json(out / "metrics.json")["steps"] == 3
    assert not (out / "work" / "job.json").exists()


def test_local_launcher_returns_the_command_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["launch", "--", "pretrain", str(missing), "--out", str(tmp_path / "run")]) == 1
    assert f"config file {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["launch"], "no command to launch"),
    (["launch", "--", "launch", "--", "demo"], "cannot launch itself"),
    (["launch", "--launcher", "submitit-local", "--", "demo"], "needs --job-dir DIR"),
])
def test_bad_launch_command_lines(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_bad_command_fails_before_any_job_is_submitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["launch", "--launcher", "submitit-local", "--job-dir", str(out / "work"), "--", "pretrain",
                 "c.yaml"]) == 1
    err = capsys.readouterr().err
    assert "not submitted: `cassle pretrain c.yaml`: the following arguments are required: --out" in err
    assert not (out / "work").exists()


def test_waiting_launcher_process_stays_light(tmp_path: Path) -> None:
    """The process that waits on the login node for a job's whole life checks an eval's options without importing
    torch (the check runs in a child process)."""
    from cassle.apps.launch import _preflight

    argv = ["eval", "linear", "SRC", "--dataset", "synthetic", "--out", "OUT"]
    code = f"import sys; from cassle.apps.launch import _preflight; _preflight({argv!r}); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
    assert "unrecognized arguments: --max-imagez 3" in _preflight([*argv, "--max-imagez", "3"])


def test_garbled_job_record_is_ignored_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.json").write_text('{"job_id": "12", "launcher": "nowhere"}')
    assert read_record(tmp_path) is None
    assert f"ignoring {tmp_path / 'job.json'}, which is not a job record" in capsys.readouterr().err


def test_bad_config_fails_before_any_job_is_submitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(launch_argv(out, "batch_size=-1")) == 1
    assert "batch_size" in capsys.readouterr().err
    assert not (out / "work").exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="Slurm is installed here")
def test_slurm_launcher_without_slurm_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(launch_argv(out, launcher="slurm")) == 1
    assert "srun is not on PATH" in capsys.readouterr().err
    assert not (out / "work").exists()


def test_submitit_local_job_runs_to_completion(completed_run: Path) -> None:
    record = read_json(completed_run / "work" / "job.json")
    assert set(record) == {"job_id", "launcher", "argv", "cwd", "tasks", "submitted_utc"}
    assert record["launcher"] == "submitit-local" and record["argv"] == pretrain_argv(completed_run)
    assert job_folders(completed_run) == [record["job_id"]]
    log = job_log(completed_run, record["job_id"])
    assert "attempt 1 on" in log and "attempt 2 on" not in log
    metrics = read_json(completed_run / "metrics.json")
    assert metrics["steps"] == STEPS and metrics["resumed"] is False
    assert not (completed_run / "work" / "slurm_job_id").exists()  # only Slurm jobs have a Slurm id


def test_failed_job_names_the_job_and_its_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(launch_argv(out, "batch_size=100000")) == 1  # valid config, impossible for the dataset: fails in the job
    err = capsys.readouterr().err
    job_id = read_record(out / "work").job_id
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"cassle: error: job {job_id} (submitit-local) failed in task 0: cassle: error: config key "
                           "'batch_size' = 100000 is larger than the dataset")  # the command's own error line
    assert f"{job_id}_0_log.out" in last and f"{job_id}_0_log.err" in last
    assert "is larger than the dataset" in err  # the tail of the job's stderr
    assert job_log(out, job_id).count("attempt ") == 1  # a failure is not requeued


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_to_the_same_weights(tmp_path: Path, completed_run: Path) -> None:
    out = tmp_path / "run"
    errors: list[BaseException] = []

    def preempt_like_slurm() -> None:
        """Once a checkpoint is committed, signal the job's task as Slurm preempts one (SIGTERM, then USR2).
        submitit 1.5.4's LocalJob._interrupt() cannot serve: it signals the controller, which dies of it."""
        try:
            wait_for(lambda: finished.is_set() or list((out / "work").glob("ckpt-*.pt.sha256")), "a checkpoint")
            for task in [] if finished.is_set() else children(int(read_record(out / "work").job_id)):
                os.kill(task, signal.SIGTERM)
                os.kill(task, signal.SIGUSR2)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    finished = threading.Event()
    thread = threading.Thread(target=preempt_like_slurm)
    thread.start()
    code = main(launch_argv(out))
    finished.set()
    thread.join()
    assert not errors and code == 0
    job_id = read_record(out / "work").job_id
    log = job_log(out, job_id)
    assert "requeued (1 of at most 10)" in log and "attempt 2 on" in log and "attempt 3 on" not in log
    assert job_folders(out) == [job_id]  # requeued in the same job
    assert read_json(out / "metrics.json")["resumed"] is True
    assert [int(row["step"]) for row in read_csv_rows(out / "history.csv")] == list(range(1, STEPS + 1))
    resumed, reference = (torch.load(run / "backbone.pt", weights_only=True) for run in (out, completed_run))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[key], reference[key]) for key in reference)


@pytest.mark.slow
def test_relaunch_reattaches_to_the_running_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    first = launch_subprocess(out, tmp_path)
    wait_for(lambda: (out / "work" / "job.json").exists(), "the first launch's job.json", first)
    first.kill()  # the launcher dies (e.g. Snakemake's machine rebooted); its job runs on
    first.wait()
    job_id = read_record(out / "work").job_id
    assert alive(int(job_id))
    assert main(launch_argv(out)) == 0
    assert f"re-attaching to job {job_id}" in capsys.readouterr().out
    assert job_folders(out) == [job_id] and read_record(out / "work").job_id == job_id
    assert read_json(out / "metrics.json")["steps"] == STEPS


@pytest.mark.slow
def test_sigterm_cancels_the_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    launcher = launch_subprocess(out, tmp_path)
    wait_for(lambda: (out / "work" / "job.json").exists(), "job.json", launcher)
    controller = int(read_record(out / "work").job_id)
    wait_for(lambda: children(controller), "the job's task", launcher)
    task = children(controller)[0]
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 128 + signal.SIGTERM
    assert f"SIGTERM received: cancelled job {controller}" in (tmp_path / "launch.err").read_text()
    assert not alive(controller) and not alive(task)
    assert not (out / "backbone.pt").exists() and (out / "work" / "job.json").exists()
    # The cancelled job has ended: launching the same command again submits a new job, which finishes the run.
    assert main(launch_argv(out)) == 0
    assert "re-attaching" not in capsys.readouterr().out
    assert len(job_folders(out)) == 2 and read_json(out / "metrics.json")["steps"] == STEPS


def waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock (a ``->`` waiter line of /proc/locks)."""
    return any("->" in line and line.split()[5] == str(pid) for line in Path("/proc/locks").read_text().splitlines())


def test_a_signal_while_waiting_for_the_lock_submits_nothing(tmp_path: Path) -> None:
    """Another launcher holds the job folder's lock; SIGINT to this one, still waiting, means no job at all (it used
    to submit the job when it got the lock, then cancel it)."""
    from cassle.core.io import exclusive_lock

    out = tmp_path / "run"
    with exclusive_lock(out / "work" / ".launch.lock"):
        launcher = launch_subprocess(out, tmp_path)
        wait_for(lambda: waits_for_a_lock(launcher.pid), "the launcher to wait for the lock", launcher)
        launcher.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the signal is recorded while flock() still blocks
    assert launcher.wait(timeout=60) == 128 + signal.SIGINT
    assert "SIGINT received before submission: nothing submitted" in (tmp_path / "launch.err").read_text()
    assert not (out / "work" / "job.json").exists() and not (out / "work" / "submitit").exists()


@pytest.mark.slow
def test_one_task_per_gpu_share_submitits_distributed_environment(tmp_path: Path, completed_run: Path) -> None:
    """--gpus 2 starts two tasks; on this CPU-only machine they train as two gloo processes (world size 2), each on
    its half of the global batch with the views one process would draw, so that they end where one process ends."""
    out = tmp_path / "run"
    argv = launch_argv(out)
    assert main([*argv[:argv.index("--")], "--gpus", "2", *argv[argv.index("--"):]]) == 0
    record = read_record(out / "work")
    assert record.tasks == 2 and read_json(out / "metrics.json")["world_size"] == 2
    assert all("Job completed successfully" in job_log(out, record.job_id, task=task) for task in (0, 1))
    one, two = (torch.load(run / "backbone.pt") for run in (completed_run, out))
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("argv,name", [
    (["pretrain", "cfg.yaml", "--out", "results/pretrain/mocov2-cassle-0123abcd"],
     "cassle-pretrain-mocov2-cassle-0123abcd"),
    (["eval", "linear", "results/pretrain/mocov2-cassle-0123abcd", "--dataset", "flowers", "--out", "o"],
     "cassle-eval-linear-mocov2-cassle-0123abcd-flowers"),
    (["eval", "sensitivity", "ckpt/spark.pt", "--arch", "resnet50", "--dataset", "imagenet100", "--out", "o"],
     "cassle-eval-sensitivity-spark-imagenet100"),
    (["report", "--results", "r"], "cassle-report-DIR"),
])
def test_job_names_say_which_run_and_dataset(argv: list[str], name: str, tmp_path: Path) -> None:
    """What squeue and sacct show for a job: the run, and for an evaluation its task, source and dataset."""
    args = build_parser().parse_args(["launch", "--job-dir", str(tmp_path / "DIR"), "--", *argv])
    assert resources_from_args(args, argv).job_name == name


def test_requeues_are_capped() -> None:
    task = CassleTask(["demo"], str(REPO), max_requeues=2, entry=main)
    for count in (1, 2):
        resubmitted = task.checkpoint()
        assert resubmitted is not None and resubmitted.function is task and task.requeues == count
    assert task.checkpoint() is None and task.requeues == 2


def test_slurm_options_become_sbatch_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered by submitit's own SlurmExecutor; a stub `srun` on PATH only passes its "is Slurm here" probe
    (nothing is submitted, the stub never runs)."""
    stub_commands(tmp_path / "bin", monkeypatch, srun="exit 1")
    job_dir = tmp_path / "mocov2-cassle-0123abcd" / "work"
    argv = ["pretrain", "cfg.yaml", "--out", str(job_dir.parent)]
    args = build_parser().parse_args([
        "launch", "--launcher", "slurm", "--job-dir", str(job_dir), "--gpus", "4", "--nodes", "2",
        "--cpus-per-task", "10", "--mem-gb", "128", "--time-min", "2880", "--partition", "gpu", "--account", "lab",
        "--qos", "high", "--constraint", "a100", "--slurm-extra", "mail-type=END", "--slurm-extra", "exclusive",
        "--", *argv])
    executor = make_executor("slurm", submitit_folder(job_dir), resources_from_args(args, argv), max_requeues=7)
    lines = set(executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid").splitlines())
    folder = job_dir.absolute() / "submitit" / "%j"
    assert {
        "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=2", "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=128GB", "#SBATCH --time=2880", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
        "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --mail-type=END", "#SBATCH --exclusive",
        "#SBATCH --job-name=cassle-pretrain-mocov2-cassle-0123abcd", f"#SBATCH --output={folder}/%j_0_log.out",
    } <= lines
    assert executor._executor.max_num_timeout == 7


def test_slurm_jobs_are_polled_afresh_and_a_failed_scancel_is_reported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Stub sacct (answering the state in a file) and scancel (failing). submitit's watcher would answer CONFIGURING
    from its cache forever, a state it deems final; a cancel that leaves the job active must not pass silently."""
    state = tmp_path / "state"
    stub_commands(tmp_path / "bin", monkeypatch, scancel="exit 1", squeue="exit 1",
                  sacct=f'printf "JobID|State|NodeList\\n42|%s|node1\\n" "$(cat {state})"')
    handle = SlurmHandle("42", tmp_path / "work", tasks=1)
    seen = []
    for now in ("CONFIGURING", "RUNNING"):
        state.write_text(now)
        seen.append(handle.state())
    assert seen == ["CONFIGURING", "RUNNING"]
    with pytest.raises(CassleError, match="code 1 and the job is RUNNING; cancel it with `scancel 42`"):
        handle.cancel()
    state.write_text("COMPLETED")
    handle.cancel()  # scancel fails on a job that has just ended: nothing is left running


def test_an_sacct_outage_is_not_taken_for_an_ended_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """sacct answers nothing twice (slurmdbd restarting), then RUNNING: the job is active, so a restarted Snakemake
    re-attaches instead of submitting a second job into the same folder. A job sacct never knows counts as ended."""
    import cassle.apps.launch.jobs as jobs

    monkeypatch.setattr(jobs, "UNKNOWN_RETRY_S", 0.0)
    calls = tmp_path / "calls"
    calls.write_text("")
    stub_commands(tmp_path / "bin", monkeypatch, squeue="exit 1", sacct=f'echo x >> {calls}; printf "JobID|State|NodeList\\n"; '
                  f'if [ "$(wc -l < {calls})" -ge 3 ]; then printf "42|RUNNING|node1\\n"; fi')
    assert SlurmHandle("42", tmp_path / "work", tasks=1).is_active()
    assert len(calls.read_text().splitlines()) == 3
    stub_commands(tmp_path / "bin2", monkeypatch, squeue="exit 1", sacct='printf "JobID|State|NodeList\\n"')
    assert not SlurmHandle("43", tmp_path / "work", tasks=1).is_active()
    assert f"knows nothing of Slurm job 43 after {jobs.UNKNOWN_RETRIES} tries" in capsys.readouterr().out


def test_a_job_of_another_launcher_removes_a_stale_slurm_job_id(tmp_path: Path) -> None:
    write_record(tmp_path, new_record("42", "slurm", ["demo"], 1))
    assert (tmp_path / "slurm_job_id").read_text() == "42\n"
    write_record(tmp_path, new_record("4242", "submitit-local", ["demo"], 1))
    assert read_record(tmp_path).job_id == "4242" and not (tmp_path / "slurm_job_id").exists()


def test_cpu_jobs_get_one_task_and_no_gpu_request() -> None:
    parameters = executor_parameters(Resources())
    assert parameters["tasks_per_node"] == 1 and parameters["gpus_per_node"] is None


def test_slurm_extra_parsing() -> None:
    assert parse_slurm_extra(["mail-type=END", "exclusive", "comment=a=b"]) == {
        "mail-type": "END", "exclusive": True, "comment": "a=b"}
    with pytest.raises(ValueError, match="--slurm-extra '=x': expected KEY=VALUE"):
        parse_slurm_extra(["=x"])
