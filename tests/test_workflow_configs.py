"""The workflow's configs and commands, run for real: the README's cluster command and every profile command of the
README, and config/cifar10.yaml, as dry runs; a bad config stopped before any job; a config without evaluations still
gets its report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow_runs import REPO, TINY, job_stats, snakemake, task_stats


def test_readme_cluster_command_plans_the_paper_grid(tmp_path):
    """`snakemake --profile profiles/slurm` on a machine without Slurm, as a dry run: every table's jobs."""
    output = snakemake(tmp_path, "--profile", "profiles/slurm", "--dry-run", cwd=REPO)
    # Pretraining: Table 2 (3 frameworks x 3 variants + MoCo-v3 ViT-S x 3), Table 4 (5 more omega subsets, one more
    # AugSelf target set, 3 more injections, 4 more encoder depths, 5 more encoder widths, which Fig 8 shares),
    # Table 10 (3).
    runs = {"main": 9, "vit": 3, "omega": 5, "augself": 1, "injection": 3, "depth": 4, "width": 5, "mocov1": 3}
    linear_runs = sum(runs.values()) + 1  # + the SparK checkpoint
    tasks = {
        "linear": linear_runs * 13,                             # the 13 downstream tasks of Table 2
        "rotation": runs["main"] * 11,                          # Table 7's 11 datasets
        "corruption": 6,                                        # Table 8: MoCo-v2 and SimCLR x 3 variants
        "detection": 6,                                         # Table 3
        "fewshot": 6,
        "sensitivity": runs["main"] + runs["width"] + runs["mocov1"] + 1,  # Figs 6, 8, 10, 9
        "conditioning": 3,                                      # Fig 3: the CASSLE runs
        "retrieval": 6,                                         # Fig 5: MoCo-v2 x 3 variants on Cars and Flowers
    }
    assert task_stats(output) == tasks
    assert job_stats(output) == {"pretrain": sum(runs.values()), "evaluate": sum(tasks.values()), "report": 1,
                                 "all": 1}
    # Jobs go through `cassle launch` with the config's resources: to Slurm where sbatch is (launcher auto).
    launcher = "slurm" if shutil.which("sbatch") else "local"
    assert f"launch --launcher {launcher} --gpus 2 --cpus-per-task 10 --mem-gb 128 --time-min 2880" in output
    assert not (tmp_path / "results").exists()


def test_cifar10_config_plans_the_papers_dag_at_cifar_scale(tmp_path):
    """config/cifar10.yaml as a dry run on one GPU: six frameworks x three variants of ResNet-18 with the CIFAR stem
    on CIFAR-10, and every evaluation that applies to CIFAR-10."""
    from cassle.apps.plan import plan_runs

    config = yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())
    runs = plan_runs(config)
    assert {(run.config["framework"], run.config["variant"]) for run in runs.values()} == {
        (framework, variant) for framework in ("simclr", "mocov2", "barlow", "mocov3", "byol", "simsiam")
        for variant in ("vanilla", "augself", "cassle")}
    assert all(run.config["dataset"] == "cifar10" and run.config["backbone"] == "resnet18"
               and run.config["cifar_stem"] and run.config["image_size"] == 32 for run in runs.values())
    output = snakemake(tmp_path, "--configfile", str(REPO / "config" / "cifar10.yaml"), "--profile",
                       "profiles/local", "--dry-run", cwd=REPO)
    # the paper grid's choice of runs per task: corruption and few-shot for MoCo-v2 and SimCLR, retrieval for MoCo-v2
    assert task_stats(output) == {"linear": 18, "rotation": 18, "corruption": 6, "sensitivity": 18,
                                  "conditioning": 6, "retrieval": 3, "fewshot": 6}
    assert job_stats(output) == {"pretrain": 18, "evaluate": 75, "report": 1, "all": 1}
    assert not (tmp_path / "results").exists()


def test_bad_workflow_config_fails_before_any_job(tmp_path):
    config = json.loads(json.dumps(TINY))
    config["pretrain"]["groups"]["main"]["grid"]["variant"] = ["vanilla", "casle"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "1", check=False)
    assert "pretrain.groups.main" in output and "'casle'" in output and "cassle" in output
    assert not (tmp_path / "results").exists()

    config = json.loads(json.dumps(TINY))
    config["evaluations"]["linear"]["options"] = {"max_imagez": 3}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "1", check=False)
    assert "evaluations.linear.options" in output and "--max-imagez" in output


def readme_profile_commands() -> list[list[str]]:
    """Every `snakemake --profile ...` command in the README's code blocks, as words (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    lines = [line.split("#", 1)[0].split() for block in blocks for line in block.splitlines()]
    return [words for words in lines if words[:2] == ["snakemake", "--profile"]]


@pytest.mark.slow
def test_the_readmes_profile_commands_work_verbatim_from_the_repository_root(tmp_path):
    """`snakemake --profile slurm` and every other profile command of the README, from the repository root (as dry
    runs). The setup installs the profile `slurm` into Snakemake's user config folder when there is none; one the
    user already has is left as it is, and used."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    install = ["bash", str(REPO / "tools" / "snakemake_profile.sh"), str(Path(sys.executable).parents[1])]
    subprocess.run(install, env=env, check=True, capture_output=True)
    installed = tmp_path / "config" / "snakemake" / "slurm" / "config.yaml"
    assert installed.read_text() == (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    commands = readme_profile_commands()
    assert ["snakemake", "--profile", "slurm"] in commands and len(commands) >= 3
    for words in commands:
        if "--report" in words:  # the HTML report of a finished workflow: its plan is what can be checked here
            words = words[:words.index("--report")] + words[words.index("--report") + 2:]
        dry = [*words, *(["--dry-run"] if "--dry-run" not in words else []), "--directory", str(tmp_path / "run")]
        done = subprocess.run(dry, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "pretrain" in job_stats(done.stdout), f"{words}: {done.stderr[-3000:]}"

    installed.write_text("cores: 3\nconfig: [results=site-results]\n")  # the user's own profile of that name
    subprocess.run(install, env=env, check=True, capture_output=True)
    assert installed.read_text() == "cores: 3\nconfig: [results=site-results]\n"
    done = subprocess.run(["snakemake", "--profile", "slurm", "--dry-run", "--directory", str(tmp_path / "run")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "site-results/pretrain/" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
def test_a_config_without_evaluations_still_gets_its_report(tmp_path):
    config = json.loads(json.dumps(TINY))
    config["evaluations"] = {}
    config["pretrain"]["defaults"].update(max_steps=2)
    config["pretrain"]["groups"]["main"]["grid"]["variant"] = ["vanilla"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "1")
    assert (tmp_path / "reports" / "README.md").is_file() and (tmp_path / "reports" / "tables").is_dir()
