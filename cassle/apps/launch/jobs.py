"""Submitted jobs: the record in the job folder (job.json), and a handle to poll, cancel and judge a job.

A job's files live in `JOB_DIR/submitit/<job id>/` (submitit's pickles and the logs `<id>_<task>_log.out|err`);
`JOB_DIR/job.json` names the latest job so that a later `cassle launch` can re-attach to it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from cassle.core.errors import CassleError
from cassle.core.io import atomic_write_text, read_json, write_json

RECORD = "job.json"
SLURM_JOB_ID = "slurm_job_id"
# sacct states of a job that may still run (or run again); anything else, seen twice in a row, has ended.
SLURM_ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                          "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"})


UNKNOWN_RETRIES = 4     # sacct queries before a job it knows nothing of counts as ended (SlurmHandle.is_active)
UNKNOWN_RETRY_S = 15.0


def submitit_folder(job_dir: Path) -> Path:
    """The folder pattern handed to submitit: one sub-folder per job id."""
    return job_dir.absolute() / "submitit" / "%j"


@dataclass(frozen=True)
class JobRecord:
    """What job.json holds."""

    job_id: str
    launcher: str
    argv: list[str]
    cwd: str
    tasks: int
    submitted_utc: str

    def runs(self, argv: Sequence[str], cwd: str) -> bool:
        """Whether this job runs the same command from the same folder."""
        return self.argv == list(argv) and self.cwd == cwd


def read_record(job_dir: Path) -> JobRecord | None:
    """The job named by JOB_DIR/job.json; None when there is none (an unreadable one is reported and ignored)."""
    path = job_dir / RECORD
    if not path.exists():
        return None
    try:
        record = JobRecord(**read_json(path))
        if record.launcher not in HANDLES or not str(record.job_id).isdigit():
            raise ValueError(f"launcher {record.launcher!r}, job id {record.job_id!r}")
        return record
    except (ValueError, TypeError) as error:
        print(f"cassle launch: warning: ignoring {path}, which is not a job record ({error})", file=sys.stderr)
        return None


def write_record(job_dir: Path, record: JobRecord) -> None:
    """Write job.json, and JOB_DIR/slurm_job_id for a Slurm job; a job of another launcher removes an older job's
    slurm_job_id, which would otherwise be taken for this job's id (the MLflow mirror tags runs with it)."""
    write_json(job_dir / RECORD, dataclasses.asdict(record))
    if record.launcher == "slurm":
        atomic_write_text(job_dir / SLURM_JOB_ID, f"{record.job_id}\n")
    else:
        (job_dir / SLURM_JOB_ID).unlink(missing_ok=True)


def new_record(job_id: str, launcher: str, argv: Sequence[str], tasks: int) -> JobRecord:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return JobRecord(job_id, launcher, list(argv), os.getcwd(), tasks, now)


class JobHandle(ABC):
    """A submitted job, by id, whoever submitted it."""

    launcher: ClassVar[str]

    def __init__(self, job_id: str, job_dir: Path, tasks: int) -> None:
        self.job_id, self.job_dir, self.tasks = job_id, job_dir, tasks

    def paths(self, task: int = 0) -> Any:
        from submitit.core.utils import JobPaths

        return JobPaths(submitit_folder(self.job_dir), job_id=self.job_id, task_id=task)

    def logs(self) -> tuple[Path, Path]:
        """stdout and stderr of task 0."""
        paths = self.paths()
        return paths.stdout, paths.stderr

    def results(self) -> list[tuple[str, Any] | None]:
        """Each task's (outcome, value or traceback) from submitit's result file; None while a task has none."""
        from submitit.core.utils import pickle_load

        files = [self.paths(task).result_pickle for task in range(self.tasks)]
        return [pickle_load(path) if path.exists() else None for path in files]

    def failure(self, state: str) -> str | None:
        """None when every task succeeded, else why the job failed: the command's own error line (`cassle: error:
        ...` in the task's stderr) when it printed one, else the last line of the task's traceback."""
        for task, result in enumerate(self.results()):
            if result is None:
                return f"ended without a result (state {state}, task {task})"
            if result[0] != "success":
                errors = [line for line in tail(self.paths(task).stderr, 200).splitlines()
                          if line.startswith("cassle: error:")]
                lines = [line for line in str(result[1]).splitlines() if line.strip()]
                return f"failed in task {task}: {(errors or lines or ['no traceback'])[-1]}"
        return None

    @abstractmethod
    def state(self) -> str:
        """The scheduler's state now."""

    @abstractmethod
    def ended(self, state: str, previous: str | None) -> bool:
        """Whether the job is over, given the state now and at the previous poll."""

    @abstractmethod
    def is_active(self) -> bool:
        """Whether the job is pending or running now (a re-attach target)."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the job (its requeues included)."""


class LocalHandle(JobHandle):
    """A submitit-local job: its id is the pid of submitit's controller process, which runs and requeues the tasks."""

    launcher = "submitit-local"
    STOP_TIMEOUT_S = 30.0

    def __init__(self, job_id: str, job_dir: Path, tasks: int, job: Any = None) -> None:
        super().__init__(job_id, job_dir, tasks)
        self.job = job  # submitit's LocalJob when this process submitted it (the controller is then our child)

    def _alive(self) -> bool:
        if self.job is not None:
            return self.job.state == "RUNNING"
        return controller_alive(int(self.job_id), submitit_folder(self.job_dir))

    def state(self) -> str:
        return "RUNNING" if self._alive() else "EXITED"

    def ended(self, state: str, previous: str | None) -> bool:
        return state != "RUNNING"

    def is_active(self) -> bool:
        return self._alive()

    def cancel(self) -> None:
        """SIGINT to the controller, as submitit's LocalJob.cancel: it stops its tasks (SIGINT, then SIGKILL after
        1 s) and exits; wait for that so that nothing of the job is left when this returns."""
        if not self._alive():
            return
        try:
            os.kill(int(self.job_id), signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.STOP_TIMEOUT_S
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive():
            raise CassleError(f"job {self.job_id} (submitit-local) still runs {self.STOP_TIMEOUT_S:g} s after SIGINT; "
                              f"stop it with `kill -INT {self.job_id}`")


def controller_alive(pid: int, folder: Path) -> bool:
    """Whether `pid` is a live (not zombie) submitit-local controller for `folder` (guards against pid reuse).
    `-ww`: the whole command line, whatever COLUMNS says."""
    probe = subprocess.run(["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True)
    fields = probe.stdout.split(None, 1)
    if probe.returncode != 0 or len(fields) < 2 or fields[0].startswith("Z"):
        return False
    return "submitit.local._local" in fields[1] and fields[1].rstrip().endswith(str(folder))


class SlurmHandle(JobHandle):
    """A Slurm job, polled with sacct through submitit."""

    launcher = "slurm"

    def __init__(self, job_id: str, job_dir: Path, tasks: int) -> None:
        import submitit

        super().__init__(job_id, job_dir, tasks)
        self.job = submitit.SlurmJob(submitit_folder(job_dir), job_id)

    def state(self) -> str:
        """The controller's state while the job is queued or running (squeue: immediate, where the accounting
        database may lag), sacct's once it has left the queue, UNKNOWN when neither knows it."""
        try:
            queued = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T"], capture_output=True, text=True)
        except FileNotFoundError:  # no squeue here: sacct alone
            queued = None
        if queued is not None and queued.returncode == 0 and queued.stdout.split():
            return queued.stdout.split()[0].upper()
        # submitit's watcher stops asking sacct about a job once it has seen a state it deems final (CONFIGURING,
        # SUSPENDED, NODE_FAIL, ...) and answers from its cache ever after: clear it so that every poll asks sacct.
        self.job.watcher.clear()
        state = self.job.watcher.get_state(self.job_id, mode="force")
        return (state.split() or ["UNKNOWN"])[0].upper()  # e.g. "CANCELLED by 1234"

    def ended(self, state: str, previous: str | None) -> bool:
        if all(result is not None for result in self.results()):
            return True
        return state not in SLURM_ACTIVE and state != "UNKNOWN" and state == previous

    def is_active(self) -> bool:
        """Whether the job may still run. sacct answering nothing (UNKNOWN: slurmdbd down, or a job purged long ago)
        is asked again a few times first: taking an outage for "ended" would submit a second job into the same
        work folder while the first still trains there."""
        for attempt in range(UNKNOWN_RETRIES):
            if attempt:
                time.sleep(UNKNOWN_RETRY_S)
            state = self.state()
            if state != "UNKNOWN":
                return state in SLURM_ACTIVE
        print(f"cassle launch: warning: sacct knows nothing of Slurm job {self.job_id} after {UNKNOWN_RETRIES} tries; "
              "taking it as ended", flush=True)
        return False

    def cancel(self) -> None:
        """scancel the job; raises when scancel fails and sacct still sees the job active (a job that has just
        ended makes scancel fail too)."""
        code = subprocess.call(["scancel", self.job_id])
        if code != 0 and (state := self.state()) in SLURM_ACTIVE:
            raise CassleError(f"could not cancel Slurm job {self.job_id}: scancel exited with code {code} and the job "
                              f"is {state}; cancel it with `scancel {self.job_id}`")


HANDLES: dict[str, type[JobHandle]] = {handle.launcher: handle for handle in (LocalHandle, SlurmHandle)}


def attach(record: JobRecord, job_dir: Path) -> JobHandle:
    """A handle on the job that job.json names."""
    return HANDLES[record.launcher](record.job_id, job_dir, record.tasks)


def submit(task: Any, executor: Any, launcher: str, job_dir: Path, argv: Sequence[str]) -> JobHandle:
    """Submit `task` and record the job in JOB_DIR/job.json (and JOB_DIR/slurm_job_id for Slurm)."""
    job = executor.submit(task)
    tasks = job.num_tasks
    write_record(job_dir, new_record(job.job_id, launcher, argv, tasks))
    if launcher == "submitit-local":
        return LocalHandle(job.job_id, job_dir, tasks, job=job)
    return SlurmHandle(job.job_id, job_dir, tasks)


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' when absent)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
