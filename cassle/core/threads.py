"""How many CPUs this process was given, and the thread settings that follow from it.

A job must size its thread pools from what the scheduler gave it, never from the machine's core count, nor from the
OMP_NUM_THREADS of whoever submitted it (Snakemake sets it to the rule's `threads`, and sbatch passes the submitting
environment into the job).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "GOTO_NUM_THREADS", "NUMBA_NUM_THREADS")
"""The variables thread pools read at start-up (BLAS, OpenMP, numba)."""


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def cgroup_cpus(root: Path = CGROUP_ROOT) -> int | None:
    """The CPU quota of this process's cgroup, rounded up (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cfs_period_us`);
    None without a quota."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return max(1, math.ceil(int(fields[0]) / int(fields[1])))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def cpu_budget(environ: Mapping[str, str] | None = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: Slurm's SLURM_CPUS_PER_TASK, else the cgroup's CPU quota, else the CPUs it
    may run on (its affinity mask), whichever is the tightest of the last two."""
    environ = os.environ if environ is None else environ
    slurm = _positive_int(environ.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        return slurm
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(cgroup_root)
    return min(affinity, quota) if quota is not None else affinity


def thread_environment(threads: int) -> dict[str, str]:
    """THREAD_VARIABLES all set to `threads`."""
    return {name: str(threads) for name in THREAD_VARIABLES}
