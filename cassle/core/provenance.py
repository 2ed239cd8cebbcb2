"""Where a result came from: config hash (identity.py), git state, package versions, device, host."""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cassle
from cassle.core.identity import config_hash
from cassle.core.io import PathLike

_PACKAGE_DIR = Path(cassle.__file__).resolve().parent


def _git(repo: PathLike | None, *args: str) -> str | None:
    """Output of a git command in ``repo`` (default: the checkout holding cassle), None on any failure."""
    folder = Path(repo) if repo is not None else _PACKAGE_DIR
    try:
        done = subprocess.run(
            ["git", "-C", os.fspath(folder), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_sha(repo: PathLike | None = None) -> str | None:
    """Commit checked out in ``repo`` (default: cassle's own checkout); None outside a git checkout."""
    return _git(repo, "rev-parse", "HEAD") or None


def git_dirty(repo: PathLike | None = None) -> bool | None:
    """Whether tracked files differ from HEAD (untracked files ignored); None outside a git checkout."""
    if git_sha(repo) is None:
        return None
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else status != ""


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions of python, torch, torchvision, numpy and cassle, and the CUDA/cuDNN torch was built with
    (None where absent)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _distribution_version("torchvision"),
        "numpy": np.__version__,
        "cassle": cassle.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
    }


def device_description() -> str:
    """One line naming the accelerators (or the CPU) this process can use."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gib = torch.cuda.get_device_properties(0).total_memory / 2**30
        return f"cuda: {len(names)} x {', '.join(sorted(set(names)))} ({gib:.0f} GiB each)"
    if torch.backends.mps.is_available():
        return "mps: Apple GPU"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the millisecond: how provenance writes times."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def provenance(config: Mapping[str, Any], seed: int, started_utc: str | None = None) -> dict[str, Any]:
    """Everything needed to trace a result back: config hash, seed, git state, versions, device, torch's CPU
    threads (they change float rounding), host,
    UTC time (``time_utc``: now, when the result is finished; ``started_utc``: when its computation started, if
    given), command line, and ``slurm_job_id`` when ``SLURM_JOB_ID`` is set."""
    record: dict[str, Any] = {
        "config_hash": config_hash(config),
        "seed": seed,
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "versions": package_versions(),
        "device": device_description(),
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "time_utc": utc_now(),
        "command": shlex.join(sys.argv),
    }
    if started_utc is not None:
        record["started_utc"] = started_utc
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return record
