"""The callable a submitit job runs: `cassle ARGV`, resubmitted unchanged when the job is preempted or times out."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence

from submitit.helpers import Checkpointable, DelayedSubmission

from cassle.core.threads import available_cpus, thread_environment


class CommandFailedError(RuntimeError):
    """The launched `cassle` command returned a non-zero exit code (its own message is in the job's stderr)."""


class CassleTask(Checkpointable):
    """`cassle ARGV` run in the job's process, in the folder it was submitted from, through `entry` (the command
    line's main function: pickled by reference, so the job imports it by name).

    Thread pools follow the CPUs the job was given (`cpus`, else Slurm's SLURM_CPUS_PER_TASK, the cgroup quota or the
    affinity mask), not the OMP_NUM_THREADS that the submitting process (Snakemake: the rule's `threads`) passed in.
    On preemption or timeout submitit calls `checkpoint()` from its signal handler; it resubmits the same argv and
    the command resumes from its own checkpoints (pretraining: OUT/work), so nothing else is carried over. At most
    `max_requeues` requeues: the next one returns None, which makes submitit end the job as failed.
    """

    def __init__(self, argv: Sequence[str], cwd: str, max_requeues: int, entry: Callable[[list[str]], int],
                 cpus: int | None = None) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.max_requeues = max_requeues
        self.entry = entry
        self.cpus = cpus
        self.requeues = 0

    def __call__(self) -> int:
        os.chdir(self.cwd)
        threads = self.cpus or available_cpus()
        os.environ.update(thread_environment(threads))  # before the command imports torch, numba or a BLAS
        print(f"cassle launch: attempt {self.attempt()} on {threads} CPU thread(s): cassle {shlex.join(self.argv)}",
              flush=True)
        code = self.entry(self.argv)
        if code:
            raise CommandFailedError(f"`cassle {shlex.join(self.argv)}` exited with code {code}")
        return code

    def attempt(self) -> int:
        """Which start of the job this is: Slurm counts every requeue (SLURM_RESTART_COUNT), also an administrator's
        `scontrol requeue`, which submitit does not see; elsewhere the requeues counted by `checkpoint()`."""
        restarts = os.environ.get("SLURM_RESTART_COUNT", "")
        return (int(restarts) if restarts.isdigit() else self.requeues) + 1

    def checkpoint(self) -> DelayedSubmission | None:  # type: ignore[override]
        if self.requeues >= self.max_requeues:
            print(f"cassle launch: not requeued: the job was already requeued {self.requeues} times "
                  f"(--max-requeues {self.max_requeues})", flush=True)
            return None
        self.requeues += 1
        print(f"cassle launch: requeued ({self.requeues} of at most {self.max_requeues})", flush=True)
        return DelayedSubmission(self)
