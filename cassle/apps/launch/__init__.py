"""`cassle launch [options] -- COMMAND ARGS...`: run `cassle COMMAND ARGS...` in-process or as a submitit job.

Launchers: `local` calls the command in this process; `submitit-local` and `slurm` submit it with submitit (the
local executor, or sbatch), requeue it on preemption and timeout (the command resumes from its own checkpoints),
re-attach to a job still running from an earlier `cassle launch` instead of submitting a duplicate, wait for it,
and cancel it when this process gets SIGINT or SIGTERM. docs/launch.md has the whole story.

The command itself is run through the `entry` and checked with the `check` function that the command line hands
over (`args.entry`, `args.check`), so this package never imports the command line above it. Importing it stays
cheap (the CLI imports it to build its parser): submitit is imported only when a job is submitted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cassle.apps.launch.jobs import JobHandle, attach, read_record, submit, submitit_folder, tail
from cassle.apps.launch.resources import Resources, check_launcher, make_executor, parse_slurm_extra
from cassle.core.errors import CassleError
from cassle.core.io import append_line, exclusive_lock

if TYPE_CHECKING:
    from cassle.apps.launch.task import CassleTask

LAUNCHERS = ("local", "submitit-local", "slurm")
LIVE_COMMANDS = ("pretrain", "eval")  # the commands that log their MLflow run live (`--mlflow RESULTS`)
DEFAULT_POLL_S = {"submitit-local": 1.0, "slurm": 60.0}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LAUNCH_LOG = "launch.log"
"""In the job folder: every line `cassle launch` printed about the job, timestamped, across reruns (Snakemake starts a
rerun's rule log afresh, so the history of submissions, re-attaches and cancels lives here)."""
WORKFLOW_PID = "CASSLE_WORKFLOW_PID"
"""The process that waits for this launcher (the workflow sets it to Snakemake's pid): when it is gone (SIGKILL, a
lost login session), nobody waits for the job any more, so the launcher leaves it running for a rerun to re-attach
and exits instead of lingering."""


def _bounded(kind: Callable[[str], float], minimum: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum:g}; {what} is needed")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle launch`."""
    count = _bounded(int, 0, "a whole number >= 0")
    positive = _bounded(int, 1, "a whole number >= 1")
    parser.epilog = ("Example: cassle launch --launcher slurm --partition gpu --gpus 4 --time-min 2880 "
                     "--job-dir results/pretrain/RUN/work -- pretrain cfg.yaml --out results/pretrain/RUN")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: in this process (default); submitit-local: a submitit job on this machine; "
                        "slurm: a submitit job on Slurm")
    parser.add_argument("--job-dir", type=Path, default=None, metavar="DIR",
                        help="the job's folder (required by the submitit launchers): job.json, slurm_job_id and "
                        "submitit/<job id>/ (pickles and logs); e.g. the run's work folder")
    parser.add_argument("--max-requeues", type=count, default=10, metavar="N",
                        help="requeues allowed after preemption or timeout before the job fails (default: 10)")
    parser.add_argument("--mlflow", type=Path, default=None, metavar="RESULTS",
                        help="log a pretrain / eval command live into MLflow (it gets --mlflow RESULTS) and, once "
                        "the command succeeded, make sure its --out folder is mirrored (RESULTS: the results root); a "
                        "store that is down only warns (docs/mlflow.md)")
    parser.add_argument("--mlflow-system-metrics", action="store_true",
                        help="with --mlflow: the command also logs system metrics (CPU, memory, GPU)")
    parser.add_argument("--check-only", action="store_true",
                        help="check the command line (and a pretraining config) as before a submission, run nothing")
    parser.add_argument("--poll-s", type=_bounded(float, 0.1, "a number of seconds >= 0.1"), default=None,
                        metavar="S", help="seconds between job state checks (default: 1 for submitit-local, "
                        "60 for slurm)")
    resources = parser.add_argument_group("resources (one task per GPU; the local launcher ignores them)")
    resources.add_argument("--gpus", type=count, default=0, metavar="N",
                           help="GPUs per node = tasks per node (default: 0, one task without a GPU)")
    resources.add_argument("--nodes", type=positive, default=1, metavar="N", help="nodes (default: 1)")
    resources.add_argument("--cpus-per-task", type=positive, default=None, metavar="N", help="CPU cores per task")
    resources.add_argument("--mem-gb", type=_bounded(float, 0.001, "a positive number of GB"), default=None,
                           metavar="GB", help="memory per node in GB")
    resources.add_argument("--time-min", type=positive, default=1440, metavar="MIN",
                           help="time limit per attempt in minutes; the job is requeued when it runs out "
                           "(default: 1440)")
    resources.add_argument("--partition", default=None, metavar="NAME", help="Slurm partition")
    resources.add_argument("--account", default=None, metavar="NAME", help="Slurm account")
    resources.add_argument("--qos", default=None, metavar="NAME", help="Slurm quality of service")
    resources.add_argument("--constraint", default=None, metavar="FEATURES", help="Slurm node constraint, e.g. a100")
    resources.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                           help="any other sbatch option, e.g. mail-type=END or exclusive (repeatable)")
    resources.add_argument("--job-name", default=None, metavar="NAME",
                           help="scheduler job name (default: cassle-COMMAND-NAME with NAME the job folder's, or its "
                           "parent's when the folder is called work)")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                        help="the cassle command to run, e.g. -- pretrain cfg.yaml --out DIR")


def run(args: argparse.Namespace) -> int:
    """`cassle launch`: `args.entry(argv)` runs a cassle command in-process, `args.check(argv)` validates one."""
    argv = _live(_command(args.argv), args)
    if args.check_only:
        args.check(argv)
        return 0
    code = _run_in_process(argv, args) if args.launcher == "local" else _run_as_job(argv, args)
    if code == 0 and args.mlflow is not None:
        _mirror_into_mlflow(argv, args.mlflow)
    return code


def _run_as_job(argv: list[str], args: argparse.Namespace) -> int:
    """Submit `cassle ARGV` (or re-attach to the job already running it) and wait for it to end."""
    from cassle.apps.launch.task import CassleTask  # submitit

    if args.job_dir is None:
        raise ValueError(f"--launcher {args.launcher} needs --job-dir DIR, the folder that keeps the job's id "
                         "(job.json) and logs (e.g. the run's work folder)")
    resources = resources_from_args(args, argv)
    check_launcher(args.launcher, resources)  # before the config is validated (seconds) or DIR is touched
    poll_s = args.poll_s or DEFAULT_POLL_S[args.launcher]
    workflow_alive = _workflow_watch()
    with _recording_signals() as received:
        problem = _preflight(argv)
        if problem is not None and received() is None:
            raise CassleError(problem)
        task = CassleTask(argv, os.getcwd(), args.max_requeues, args.entry, cpus=resources.cpus_per_task)
        handle = _submit_or_attach(task, args.launcher, args.job_dir, resources, received)
        if handle is None:  # a signal came before the submission (during the checks, or waiting for the lock)
            signum = received()
            _say(args.job_dir, f"{signal.Signals(signum).name} received before submission: nothing submitted",
                 error=True)
            return 128 + signum
        return _wait(handle, poll_s, received, workflow_alive)


def _live(argv: list[str], args: argparse.Namespace) -> list[str]:
    """`argv` with the live MLflow options that `--mlflow` (and `--mlflow-system-metrics`) of `cassle launch` ask for,
    for a command that logs live and was not given them itself."""
    if args.mlflow is None or argv[0] not in LIVE_COMMANDS or "--mlflow" in argv:
        return argv
    return [*argv, "--mlflow", str(args.mlflow), *(["--mlflow-system-metrics"] if args.mlflow_system_metrics else [])]


def _mirror_into_mlflow(argv: list[str], results: Path) -> None:
    """Mirror the finished command's --out folder into MLflow (`cassle mlflow log`, `log-reports` for a report) in a
    child process. Never fails the job, whose files are written: a store that is down only warns, and `cassle mlflow
    sync` backfills later."""
    import subprocess

    out = _option(argv, "--out")
    if out is None:
        print(f"cassle launch: warning: `cassle {shlex.join(argv)}` has no --out folder to log into MLflow",
              file=sys.stderr, flush=True)
        return
    action = "log-reports" if argv[0] == "report" else "log"
    sys.stdout.flush()
    sys.stderr.flush()
    done = subprocess.run([sys.executable, "-m", "cassle", "mlflow", action, out, "--results", str(results)],
                          check=False)
    if done.returncode != 0:
        print(f"cassle: warning: MLflow logging of {out} failed; run cassle mlflow sync", file=sys.stderr, flush=True)


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of option `name` in a command line (`--out DIR`), None when absent."""
    return next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name), None)


def _command(raw: Sequence[str]) -> list[str]:
    argv = list(raw[1:] if raw[:1] == ["--"] else raw)
    if not argv:
        raise ValueError("no command to launch: put it after --, e.g. cassle launch -- pretrain cfg.yaml --out DIR")
    if argv[0] == "launch":
        raise ValueError(f"cassle launch cannot launch itself (got: launch -- {shlex.join(argv)}); "
                         "give the command to run after --, e.g. -- pretrain cfg.yaml --out DIR")
    return argv


def resources_from_args(args: argparse.Namespace, argv: Sequence[str]) -> Resources:
    """The job's resources from the options of `cassle launch`."""
    return Resources(
        gpus=args.gpus, nodes=args.nodes, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
        time_min=args.time_min, partition=args.partition, account=args.account, qos=args.qos,
        constraint=args.constraint, extra=parse_slurm_extra(args.slurm_extra),
        job_name=args.job_name or _default_job_name(argv, args.job_dir))


def _default_job_name(argv: Sequence[str], job_dir: Path) -> str:
    """What the scheduler shows: cassle-pretrain-<run>, cassle-eval-<task>-<source>-<dataset>, else
    cassle-<command>-<the job folder's name, or its parent's when it is called work>."""
    if argv[0] == "eval" and len(argv) > 2 and not argv[2].startswith("-"):
        source = Path(argv[2]).name.removesuffix(".pt")
        return "-".join(["cassle", "eval", argv[1], source, *filter(None, [_option(argv, "--dataset")])])
    out = _option(argv, "--out")
    if argv[0] == "pretrain" and out:
        return f"cassle-pretrain-{Path(out).name}"
    folder = job_dir.absolute()
    return f"cassle-{argv[0]}-{folder.parent.name if folder.name == 'work' else folder.name}"


def _run_in_process(argv: list[str], args: argparse.Namespace) -> int:
    if args.gpus > 1 or args.nodes > 1:
        print(f"cassle launch: note: the local launcher runs one process; --gpus {args.gpus} --nodes {args.nodes} "
              "are ignored (use --launcher submitit-local or slurm for one process per GPU)", file=sys.stderr)
    return args.entry(argv)


def _preflight(argv: list[str]) -> str | None:
    """Why `cassle ARGV` must not be submitted (a bad command line or, for pretrain, a bad config), None when it may:
    checked here so that nothing waits in a queue to fail. It runs in a child process (`cassle launch
    --check-only`; the checks import no torch, ~0.3 s): whatever they import, this process, waiting on the login node
    for as long as the job runs (one per job), never keeps."""
    import subprocess

    command = [sys.executable, "-m", "cassle", "launch", "--check-only", "--", *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    return f"not submitted: `cassle {shlex.join(argv)}`: {last.split('error: ', 1)[-1]}"


@contextmanager
def _recording_signals() -> Iterator[Callable[[], int | None]]:
    """Record SIGINT/SIGTERM instead of dying, so that the job is cancelled first; yields 'which one came'."""
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in _SIGNALS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _locked(job_dir: Path) -> Iterator[None]:
    """One `cassle launch` at a time decides whether to submit for a job folder."""

    with exclusive_lock(job_dir / ".launch.lock"):
        yield


def _submit_or_attach(task: CassleTask, launcher: str, job_dir: Path, resources: Resources,
                      received: Callable[[], int | None]) -> JobHandle | None:
    """The job that runs ``task`` in ``job_dir``: the active one, else a new submission; None, submitting nothing,
    when SIGINT/SIGTERM came while this process waited for the folder's lock."""
    argv = task.argv

    with _locked(job_dir):
        if received() is not None:
            return None
        record = read_record(job_dir)
        old = attach(record, job_dir) if record is not None else None
        if old is not None and old.is_active():
            if record.runs(argv, os.getcwd()):
                _say(job_dir, f"re-attaching to job {old.job_id} ({old.launcher}), submitted {record.submitted_utc} "
                     "and still active")
                return old
            _say(job_dir, f"warning: job {old.job_id} in {job_dir / 'job.json'} is still active but runs another "
                 f"command (cassle {shlex.join(record.argv)}); it is left alone", error=True)
        elif old is not None:
            _say(job_dir, f"job {old.job_id} in {job_dir / 'job.json'} has ended: submitting a new job")
        executor = make_executor(launcher, submitit_folder(job_dir), resources, task.max_requeues)
        handle = submit(task, executor, launcher, job_dir, argv)
    out, err = handle.logs()
    _say(job_dir, f"submitted job {handle.job_id} ({launcher}, {handle.tasks} task(s)); logs: {out} {err}")
    return handle


def _say(job_dir: Path, text: str, error: bool = False) -> None:
    """Print `cassle launch: TEXT` (stderr for warnings and cancels) and append it to the job folder's launch.log."""
    line = f"cassle launch: {text}"
    print(line, file=sys.stderr if error else sys.stdout, flush=True)
    append_line(job_dir / LAUNCH_LOG, f"{datetime.now().isoformat(timespec='seconds')} {line}")


def _process_start(pid: int) -> str | None:
    """When process `pid` started (in clock ticks since boot; tells a process from a later one with its pid), None
    when there is no such process, it has exited and waits to be reaped (a zombie), or there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if len(fields) < 20 or fields[0] in ("Z", "X") else fields[19]


def _workflow_watch() -> Callable[[], bool]:
    """A probe of whether the process named by CASSLE_WORKFLOW_PID still runs (always true without one)."""
    text = os.environ.get(WORKFLOW_PID, "")
    started = _process_start(int(text)) if text.isdigit() else None
    if started is None:
        return lambda: True
    return lambda: _process_start(int(text)) == started


def _wait(handle: JobHandle, poll_s: float, received: Callable[[], int | None],
          workflow_alive: Callable[[], bool]) -> int:
    """Poll until the job ends, printing state changes. On SIGINT/SIGTERM cancel it (unless it has just completed);
    when the workflow that waits for it is gone, leave it running and exit."""
    previous: str | None = None
    while True:
        state = handle.state()
        if state != previous:
            _say(handle.job_dir, f"job {handle.job_id}: {state}")
        if handle.ended(state, previous):
            break
        previous = state
        deadline = time.monotonic() + poll_s
        while time.monotonic() < deadline and received() is None:
            time.sleep(min(0.1, poll_s))
        signum = received()
        if signum is not None:
            return _stop(handle, signal.Signals(signum))
        if not workflow_alive():
            _say(handle.job_dir, f"the workflow waiting for job {handle.job_id} is gone (pid "
                 f"{os.environ[WORKFLOW_PID]}): the job goes on, and rerunning the workflow re-attaches to it",
                 error=True)
            return 1
    failure = handle.failure(state)
    if failure is None:
        _say(handle.job_dir, f"job {handle.job_id} completed")
        return 0
    out, err = handle.logs()
    for path in (out, err):
        print(f"----- tail of {path} -----\n{tail(path)}", file=sys.stderr)
    message = f"job {handle.job_id} ({handle.launcher}) {failure}; logs: {out} {err}"
    append_line(handle.job_dir / LAUNCH_LOG, f"{datetime.now().isoformat(timespec='seconds')} error: {message}")
    raise CassleError(message)


def _stop(handle: JobHandle, signum: signal.Signals) -> int:
    """Cancel the job for `signum`; a job whose every task has already succeeded is reported completed instead."""
    if handle.failure("ENDED") is None:
        _say(handle.job_dir, f"job {handle.job_id} completed (before {signum.name} arrived)")
        return 0
    handle.cancel()
    _say(handle.job_dir, f"{signum.name} received: cancelled job {handle.job_id}", error=True)
    return 128 + signum
