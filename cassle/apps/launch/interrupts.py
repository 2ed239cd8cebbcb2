"""Stopping a workflow stops its jobs: SIGINT and SIGTERM to Snakemake reach every job it started.

Snakemake runs each job as a child shell (here: `cassle launch ...`). Ctrl-C in a terminal signals the whole process
group, so the launchers hear it and cancel their Slurm jobs; but `kill -INT <snakemake pid>` signals Snakemake alone,
which then waits for jobs nobody cancels, and SIGTERM makes it wait for them on purpose ("graceful"). The Snakefile
calls `forward_interrupts()` when the workflow starts: each SIGINT or SIGTERM is passed on to what every job runs
(the processes below Snakemake's job shells: a shell would die of SIGTERM at once, and Snakemake would report the job
before its launcher had cancelled it) before Snakemake's own handling runs, once; a second Ctrl-C only passes the
signal on again, instead of interrupting Snakemake's clean-up (which ends in "RuntimeError: Cannot close a running
event loop").
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

_received: list[int] = []


def process_tree() -> dict[int, list[int]]:
    """{pid: its children}, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    """Every process below `pid` in `tree`, children first."""
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in tree.get(parent, [])]
        found += frontier
    return found


def pass_on(signum: int, pid: int | None = None) -> None:
    """Send `signum` to every process below the children of `pid` (default: this one): what the jobs run, not the
    jobs' shells, which end when it ends."""
    tree = process_tree()
    shells = tree.get(os.getpid() if pid is None else pid, [])
    for target in (process for shell in shells for process in descendants(shell, tree)):
        try:
            os.kill(target, signum)
        except (ProcessLookupError, PermissionError):
            pass


def forward_interrupts() -> None:
    """From now on, SIGINT and SIGTERM to this process are passed on to all its descendants, then handled as before
    (the first time only). Call it from the main thread."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _forwarding(signum, signal.getsignal(signum)))


def interrupted() -> bool:
    """Whether a forwarded SIGINT or SIGTERM has arrived."""
    return bool(_received)


def _forwarding(signum: int, previous: object) -> Callable[[int, FrameType | None], None]:
    def handle(received: int, frame: FrameType | None) -> None:
        first = not _received
        _received.append(received)
        pass_on(received)
        if not first:
            return
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            raise SystemExit(128 + signum)

    return handle
