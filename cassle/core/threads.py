"""How many CPUs this process was given: Slurm's allocation, else the cgroup's CPU quota, else the affinity mask.

A machine's core count (`os.cpu_count()`) is the wrong number of threads for a job that got a share of it: a Slurm
task with `--cpus-per-task 4` on a 64-core node, or a container limited to 2 CPUs by its cgroup, oversubscribes its
cores with 64 threads, and torch's parallel regions then wait for threads that the scheduler has parked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["THREAD_VARIABLES", "available_cpus", "cgroup_cpu_quota", "thread_environment"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "GOTO_NUM_THREADS", "NUMBA_NUM_THREADS")
"""The variables thread pools read at start-up (BLAS, OpenMP, numba). Snakemake sets some of them to a rule's
`threads`, and sbatch passes the submitting environment into the job: a job resets them from `available_cpus()`."""


def _affinity() -> int:
    """CPUs in this process's affinity mask (the core count where the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _quota_v2(cgroup: Path, root: Path) -> float | None:
    """The tightest `cpu.max` ("QUOTA PERIOD" or "max PERIOD") from `cgroup` up to `root`, in CPUs."""
    limits = []
    for folder in (cgroup, *cgroup.parents):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root:
            break
    return min(limits, default=None)


def _quota_v1(folder: Path) -> float | None:
    """`cpu.cfs_quota_us / cpu.cfs_period_us` of a cgroup v1 cpu folder, in CPUs (None: -1, no quota)."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: Path | str = "/") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (may be fractional), None when there is none.

    Reads `ROOT/proc/self/cgroup`, then cgroup v2's `cpu.max` of the process's cgroup and its ancestors under
    `ROOT/sys/fs/cgroup`, or cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` of its cpu controller folder.
    Inside a container the recorded path may not exist under the mount (cgroup namespaces): the mount's own folder
    is read then. `root` is for tests (a fake file tree); it is "/" otherwise.
    """
    root = Path(root)
    mount = root / "sys" / "fs" / "cgroup"
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        relative = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2 (unified hierarchy)
            folder = mount / relative
            quotas.append(_quota_v2(folder if folder.is_dir() else mount, mount))
        elif "cpu" in controllers.split(","):
            for name in dict.fromkeys((controllers, "cpu", "cpu,cpuacct")):
                base = mount / name
                if base.is_dir():
                    folder = base / relative
                    quotas.append(_quota_v1(folder if folder.is_dir() else base))
                    break
    return min((q for q in quotas if q is not None), default=None)


def available_cpus(environ: Mapping[str, str] | None = None, root: Path | str = "/") -> int:
    """The number of CPUs this process was given, at least 1.

    The first of: Slurm's `SLURM_CPUS_PER_TASK` (a positive integer), the cgroup's CPU quota rounded up
    (`cgroup_cpu_quota`), the affinity mask; never more than the affinity mask, since the process cannot run on
    more CPUs than that. `environ` defaults to `os.environ`; `root` is for tests (see `cgroup_cpu_quota`).
    """
    environ = os.environ if environ is None else environ
    affinity = _affinity()
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return min(int(slurm), affinity)
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        return max(1, min(math.ceil(quota - 1e-9), affinity))
    return max(1, affinity)


def thread_environment(threads: int) -> dict[str, str]:
    """THREAD_VARIABLES all set to `threads`."""
    return {name: str(threads) for name in THREAD_VARIABLES}
