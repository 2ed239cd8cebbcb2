"""The installable project: pins, environment files, and the .venv builder that `make demo` / `make test` use."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    return {name.lower().replace("_", "-"): version for name, version in pairs}


def test_constraints_pin_every_dependency_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in map(Requirement, requirements):
        name = requirement.name.lower()
        assert name in pinned, f"{name} is a dependency but constraints.txt does not pin it"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} violates {requirement}"


def test_issue_pins():
    pinned = pins()
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1" and pinned["mlflow"] == "3.17.2"
    assert pinned["snakemake"].startswith("9.")
    assert tuple(map(int, pinned["submitit"].split("."))) >= (1, 5, 3)


def test_environment_yml_is_conda_forge_python_311_with_the_same_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in env["dependencies"]
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert "-c constraints.txt" in pip_section and any(line.startswith("-e .") for line in pip_section)


def test_ci_installs_system_packages_then_runs_make_test_and_nothing_else():
    commands = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert commands[-1].endswith("make test")
    assert commands[-2] == "bash tools/system-packages.sh"
    slurm = commands.index('if [[ -f "$slurm" ]]; then')  # the real Slurm of tests/test_slurm_*.py, where it exists
    assert commands[slurm:slurm + 5] == ['if [[ -f "$slurm" ]]; then', '  bash "$slurm"', "else",
                                         commands[slurm + 3], "fi"] and commands[slurm + 3].lstrip().startswith("echo ")
    rest = commands[:slurm] + commands[slurm + 5:-2]
    assert all(line.startswith(("set ", "cd ", "slurm=")) for line in rest), rest
    script = (REPO / "tools" / "system-packages.sh").read_text()
    assert "apt-get install -y -qq chromium" in script and "command -v chromium" in script  # once, Debian's


@pytest.mark.slow
def test_venv_builder_creates_a_working_venv_and_rebuilds_when_stale(tmp_path):
    """tools/venv.sh on top of this machine's dependency cache: cassle, snakemake and mlflow work in the new venv."""
    if os.environ.get("CASSLE_VENV_CACHE") == "off":
        pytest.skip("without the dependency cache this would reinstall the whole stack")
    venv = tmp_path / "venv"
    env = dict(os.environ)
    # A relative path, as `make venv` passes it; the console scripts must still run from any directory.
    subprocess.run(["bash", str(REPO / "tools/venv.sh"), "venv"], check=True, env=env, timeout=900, cwd=tmp_path)
    stamp = (venv / ".cassle-stamp").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["cassle", "--version"], ["snakemake", "--version"], ["mlflow", "--version"]):
        result = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                                cwd=elsewhere)
        assert result.returncode == 0, result.stderr
    marker = venv / "stale-marker"
    marker.touch()
    subprocess.run(["bash", str(REPO / "tools/venv.sh"), str(venv)], check=True, env=env, timeout=900)
    assert marker.exists(), "an up-to-date venv must be left alone"
    (venv / ".cassle-stamp").write_text("0000 elsewhere\n")
    subprocess.run(["bash", str(REPO / "tools/venv.sh"), str(venv)], check=True, env=env, timeout=900)
    assert not marker.exists(), "a stale venv must be rebuilt"
    assert (venv / ".cassle-stamp").read_text() == stamp
