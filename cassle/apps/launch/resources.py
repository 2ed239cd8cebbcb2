"""What a job asks the scheduler for, and how it maps onto submitit's executors (one task per GPU)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER_CLUSTERS = {"submitit-local": "local", "slurm": "slurm"}
_SLURM_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Resources:
    """Per job: `nodes` nodes, each with `gpus` GPUs and one task (process) per GPU, or one task when gpus is 0."""

    gpus: int = 0
    nodes: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 1440
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str | bool] = field(default_factory=dict)
    job_name: str = "cassle"

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus)


def parse_slurm_extra(items: Iterable[str]) -> dict[str, str | bool]:
    """`KEY=VALUE` -> {KEY: VALUE}; a bare `KEY` is a flag (`#SBATCH --KEY`)."""
    extra: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not _SLURM_KEY.fullmatch(key):
            raise ValueError(f"--slurm-extra {item!r}: expected KEY=VALUE or KEY with KEY an sbatch option name "
                             "without dashes, e.g. --slurm-extra mail-type=END or --slurm-extra exclusive")
        extra[key] = value if sep else True
    return extra


def executor_parameters(resources: Resources) -> dict[str, Any]:
    """Keyword arguments of `submitit.AutoExecutor.update_parameters` (None: not set; slurm_*: Slurm only)."""
    return {
        "name": resources.job_name,
        "timeout_min": resources.time_min,
        "nodes": resources.nodes,
        "tasks_per_node": resources.tasks_per_node,
        "gpus_per_node": resources.gpus or None,
        "cpus_per_task": resources.cpus_per_task,
        "mem_gb": resources.mem_gb,
        "slurm_partition": resources.partition,
        "slurm_account": resources.account,
        "slurm_qos": resources.qos,
        "slurm_constraint": resources.constraint,
        "slurm_additional_parameters": dict(resources.extra) or None,
    }


def check_launcher(launcher: str, resources: Resources) -> None:
    """Raise ValueError when `launcher` (submitit-local or slurm) cannot run a job with `resources` here."""
    cluster = LAUNCHER_CLUSTERS[launcher]
    if cluster == "slurm" and shutil.which("srun") is None:
        raise ValueError("--launcher slurm needs Slurm (srun is not on PATH on this machine); run on a Slurm "
                         "login node, or use --launcher submitit-local or local")
    if cluster == "local" and resources.nodes > 1:
        raise ValueError(f"--nodes {resources.nodes}: --launcher submitit-local runs on this machine only; "
                         "use --nodes 1 or --launcher slurm")


def make_executor(launcher: str, folder: Path, resources: Resources, max_requeues: int) -> Any:
    """A submitit executor for `launcher` (submitit-local or slurm) writing its files into `folder`."""
    import submitit

    check_launcher(launcher, resources)
    cluster = LAUNCHER_CLUSTERS[launcher]
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=max_requeues,
                                     local_max_num_timeout=max_requeues)
    executor.update_parameters(**executor_parameters(resources))
    return executor
