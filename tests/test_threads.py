"""The CPUs a process was given: Slurm's variable, cgroup v1/v2 quotas in a fake file tree, the affinity mask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cassle.core.threads import available_cpus, cgroup_cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def fake_cgroup(root: Path, proc_self_cgroup: str, files: dict[str, str]) -> Path:
    """A file tree with ROOT/proc/self/cgroup and files under ROOT/sys/fs/cgroup."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "cgroup").write_text(proc_self_cgroup)
    for relative, text in files.items():
        path = root / "sys" / "fs" / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_takes_the_tightest_quota_of_the_cgroup_and_its_ancestors(tmp_path) -> None:
    root = fake_cgroup(tmp_path, "0::/jobs/job7\n", {
        "cpu.max": "max 100000\n",
        "jobs/cpu.max": "300000 100000\n",  # 3 CPUs for all jobs
        "jobs/job7/cpu.max": "150000 100000\n",  # 1.5 for this one
    })
    assert cgroup_cpu_quota(root) == pytest.approx(1.5)
    (root / "sys/fs/cgroup/jobs/job7/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root) == pytest.approx(3.0)
    (root / "sys/fs/cgroup/jobs/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root) is None


def test_cgroup_v2_inside_a_namespace_reads_the_mount_itself(tmp_path) -> None:
    """In a container the recorded path does not exist under the mount: the mount's own cpu.max is the limit."""
    root = fake_cgroup(tmp_path, "0::/kubepods/pod1/abc\n", {"cpu.max": "50000 100000\n"})
    assert cgroup_cpu_quota(root) == pytest.approx(0.5)


@pytest.mark.parametrize("folder", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_cfs_quota(tmp_path, folder) -> None:
    root = fake_cgroup(tmp_path, "5:memory:/\n4:cpu,cpuacct:/slurm/job3\n0::/\n", {
        f"{folder}/slurm/job3/cpu.cfs_quota_us": "200000\n",
        f"{folder}/slurm/job3/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_quota(root) == pytest.approx(2.0)
    (root / "sys/fs/cgroup" / folder / "slurm/job3/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(root) is None


def test_no_cgroup_information_means_no_quota(tmp_path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None
    assert cgroup_cpu_quota(fake_cgroup(tmp_path / "garbled", "nonsense\n", {"cpu.max": "x y\n"})) is None


def test_available_cpus_precedence(tmp_path, monkeypatch) -> None:
    quota_1 = fake_cgroup(tmp_path / "one", "0::/\n", {"cpu.max": "100000 100000\n"})
    quota_half = fake_cgroup(tmp_path / "half", "0::/\n", {"cpu.max": "40000 100000\n"})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert available_cpus(root=tmp_path / "none") == AFFINITY  # no Slurm, no quota: the affinity mask
    assert available_cpus(root=quota_1) == 1
    assert available_cpus(root=quota_half) == 1  # a fraction of a CPU still runs one thread
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus(root=tmp_path / "none") == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4096")  # never more than the CPUs the process may run on
    assert available_cpus(root=quota_1) == AFFINITY
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")  # set but empty (or garbage): the next source
    assert available_cpus(root=quota_1) == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, root=tmp_path / "none") == 1


def test_a_process_with_one_cpu_in_its_mask_gets_one() -> None:
    """A real child process pinned to one CPU, with no Slurm variable: the affinity mask decides."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from cassle.core.threads import available_cpus; print(available_cpus())")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
