"""Shared fixtures: the real CIFAR-10 JPEG folders from ../shared (skipped when absent)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


LONG_MARKS = ("slurm", "slow")
"""Files holding a test with one of these marks run first, those with the first mark before those with the second:
real Slurm jobs and real Snakemake workflows take minutes per file, mostly waiting on other processes. `make test`
keeps that order (`--dist loadfile --no-loadscope-reorder`), so the other workers share the long files while one runs
the Slurm files (SLURM_FILES), instead of one worker finishing the long files alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank: dict[Path, int] = {}
    for item in items:
        marks = [index for index, mark in enumerate(LONG_MARKS) if item.get_closest_marker(mark)]
        rank[item.path] = min([rank.get(item.path, len(LONG_MARKS)), *marks])
    items.sort(key=lambda item: rank[item.path])  # stable: the order within and among files of one rank is kept


SLURM_FILES = "test_slurm_"
"""Test files named test_slurm_*.py submit jobs to the one real Slurm node (2 CPUs, 2 GPUs). Two of them at once would
queue each other's jobs, and the tests that check that two jobs ran at the same time would fail: under
`--dist loadfile` they form one work unit, which one worker runs file after file."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` with the Slurm files as one unit (SLURM_FILES); other modes are xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneSlurmNode(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return f"tests/{SLURM_FILES}*.py" if Path(scope).name.startswith(SLURM_FILES) else scope

    return OneSlurmNode(config, log)


@pytest.fixture(autouse=True)
def _share_the_cores():
    """Tests run on 2-core machines, often in 2 xdist workers: split the cores between workers, no oversubscription."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // workers))


@pytest.fixture(scope="session")
def cifar10_jpeg_root() -> Path:
    """Root holding `train/<class>/*.jpg` and `test/<class>/*.jpg`, extracted once into a cache folder."""
    if not CIFAR_TARBALL.exists():
        pytest.skip(f"real CIFAR-10 data not found at {CIFAR_TARBALL} (../shared is absent)")
    cache = Path(os.environ.get("CASSLE_TEST_DATA", Path.home() / ".cache" / "cassle" / "test-data"))
    root = cache / "cifar10-jpeg"
    done = cache / ".cifar10-jpeg.complete"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".cifar10-jpeg.lock", "w") as lock:  # parallel test workers extract it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            tmp = cache / f".extract-{os.getpid()}"
            with tarfile.open(CIFAR_TARBALL) as tar:
                tar.extractall(tmp, filter="data")
            shutil.rmtree(root, ignore_errors=True)
            (tmp / "cifar10-jpeg").rename(root)
            shutil.rmtree(tmp, ignore_errors=True)
            done.touch()
    return root
