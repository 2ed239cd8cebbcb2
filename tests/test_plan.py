"""cassle.apps.plan: a workflow config expanded into runs and evaluations, checked before any job starts."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cassle.apps.plan import PlanError, plan_runs, plan_workflow
from cassle.config import experiment_hash, load_config

REPO = Path(__file__).resolve().parents[1]

GRID = {
    "seeds": [0],
    "pretrain": {
        "defaults": {"dataset": "synthetic", "backbone": "resnet_narrow", "max_steps": 5, "num_workers": 0},
        "groups": {
            "main": {"grid": {"framework": ["mocov2", "simclr"], "variant": ["vanilla", "cassle"]}},
            # the last cell repeats main's MoCo-v2 CASSLE run (all omega keys): it must be planned once
            "omega": {"config": {"framework": "mocov2", "variant": "cassle"},
                      "grid": {"conditioning.omega_keys": [["crop"],
                                                           ["blur", "color", "color_diff", "crop", "flip",
                                                            "grayscale"]]}},
        },
    },
    "evaluations": {
        "linear": {"groups": ["main", "omega"], "datasets": ["synthetic", "cifar10"], "external": ["other"],
                   "options": {"max_images": 64, "no_warm_start": True}},
        "sensitivity": {"groups": ["main"], "where": {"framework": ["mocov2"]}, "datasets": ["synthetic"]},
    },
    "external": {"other": {"path": "/ckpt/other.pt", "arch": "resnet50"}},
}


def test_grid_expands_per_group_cell_and_seed_and_shares_equal_runs():
    runs = plan_runs(GRID)
    assert len(runs) == 5  # 4 main cells + 1 new omega subset; the full-omega CASSLE run is shared
    shared = [run for run in runs.values() if run.groups == ("main", "omega")]
    assert len(shared) == 1 and shared[0].config["conditioning.omega_keys"] == GRID["pretrain"]["groups"]["omega"][
        "grid"]["conditioning.omega_keys"][1]
    two_seeds = plan_runs({**GRID, "seeds": [0, 1]})
    assert len(two_seeds) == 10 and {run.config["seed"] for run in two_seeds.values()} == {0, 1}
    repeated = plan_runs({**GRID, "seeds": [0, 0]})  # a cell planned twice by one group lists that group once
    assert {name: run.groups for name, run in repeated.items()} == {name: run.groups for name, run in runs.items()}


def test_run_name_is_the_config_hash_and_the_command_line_rebuilds_the_config():
    for run in plan_runs(GRID).values():
        config = load_config(None, [arg for arg in run.pretrain_args() if arg != "--set"])
        assert config == run.config
        framework, variant, digest = run.name.split("-")
        assert (framework, variant) == (config["framework"], config["variant"])
        assert experiment_hash(config).startswith(digest)


def test_runtime_keys_do_not_change_the_run_folder():
    moved = copy.deepcopy(GRID)
    moved["pretrain"]["defaults"].update(num_workers=8, data_root="/elsewhere", device="cpu")
    assert set(plan_runs(moved)) == set(plan_runs(GRID))
    changed = copy.deepcopy(GRID)
    changed["pretrain"]["defaults"]["max_steps"] = 6
    assert not set(plan_runs(changed)) & set(plan_runs(GRID))


def test_evaluations_follow_groups_where_and_external():
    plan = plan_workflow(GRID)
    linear = plan.evaluations["linear"]
    assert len(linear) == (5 + 1) * 2
    external = [e for e in linear if e.external]
    assert {e.source for e in external} == {"external-other"} and external[0].arch == "resnet50"
    assert external[0].eval_args(Path("res"))[:2] == ["linear", "/ckpt/other.pt"]
    assert linear[0].options == ("--max-images", "64", "--no-warm-start")
    sensitivity = plan.evaluations["sensitivity"]
    assert sorted(e.source.rsplit("-", 1)[0] for e in sensitivity) == ["mocov2-cassle", "mocov2-vanilla"]
    assert plan.job_counts() == {"pretrain": 5, "evaluate": 14, "report": 1}
    assert plan.task_counts() == {"linear": 12, "sensitivity": 2}
    evaluation = sensitivity[0]
    assert evaluation.eval_args(Path("res"))[:6] == [
        "sensitivity", f"res/pretrain/{evaluation.source}", "--dataset", "synthetic", "--out",
        f"res/eval/sensitivity/{evaluation.source}/synthetic"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["pretrain"]["groups"]["main"]["grid"].update(variant=["vanilla", "casle"]),
     "pretrain.groups.main: config key 'variant' = 'casle'"),
    (lambda c: c["pretrain"]["defaults"].update(batch_size=-4), "'batch_size' = -4"),
    (lambda c: c["pretrain"]["groups"]["omega"]["grid"].update({"conditioning.omega_keys": [["crop", "rotation"]]}),
     "pretrain.groups.omega: config key 'conditioning.omega_keys'"),
    (lambda c: c["pretrain"]["defaults"].update(lr=0.1), "unknown config key 'lr'"),
    (lambda c: c["evaluations"]["linear"].update(groups=["nope"]), "evaluations.linear.groups: unknown group(s) nope"),
    (lambda c: c["evaluations"]["linear"].update(datasets=["imagenet"]), "unknown dataset(s) imagenet"),
    (lambda c: c["evaluations"]["linear"].update(external=["spark"]), "'spark' is not under `external:`"),
    (lambda c: c["evaluations"]["sensitivity"].update(where={"frame": ["mocov2"]}), "unknown config key(s) frame"),
    (lambda c: c["evaluations"]["sensitivity"].update(where={"framework": ["mocov22"]}),
     "evaluations.sensitivity.where: config key 'framework' = 'mocov22' is not allowed; expected one of simclr, mocov2"),
    (lambda c: (c["external"].update({"spark-v2": {"path": "/s.pt", "arch": "resnet50"}}),
                c["evaluations"]["linear"].update(external=["spark-v2"])),
     "external.spark-v2: the name 'spark-v2' is not allowed; expected letters, digits and '_'"),
    (lambda c: c["evaluations"]["linear"].update(options={"max_imagez": 3}), "does not accept '--max-imagez 3'"),
    (lambda c: c["evaluations"].update(segmentation={"datasets": ["synthetic"]}), "unknown evaluation 'segmentation'"),
])
def test_bad_workflow_configs_name_the_key_and_value(edit, message):
    config = copy.deepcopy(GRID)
    edit(config)
    with pytest.raises(PlanError) as error:
        plan_workflow(config)
    assert message in str(error.value)


def test_the_shipped_configs_plan():
    for name in ("config.yaml", "demo.yaml"):
        plan = plan_workflow(yaml.safe_load((REPO / "config" / name).read_text()), check_options=False)
        assert plan.runs and all(plan.evaluations.values())


HEAVY = ("torch", "torchvision", "PIL", "numpy", "sklearn")


def test_planning_and_the_launch_preflight_import_no_torch(tmp_path: Path):
    """What runs at every Snakemake start (the plan of every shipped config with its option checks, the inputs check)
    and before every submission (`cassle launch`'s checks of a pretrain and an eval command) loads no heavy library:
    torch and torchvision alone take seconds to import, paid per Snakemake call and per job otherwise."""
    script = f"""
import sys, yaml
from pathlib import Path
from cassle.apps.cli import check_command
from cassle.apps.plan import missing_inputs, plan_workflow
for name in ("config.yaml", "demo.yaml", "cifar10.yaml"):
    plan = plan_workflow(yaml.safe_load(Path({str(REPO / "config")!r}, name).read_text()))
    jobs = [("pretrain", {{"run": run}}) for run in plan.runs]
    jobs += [("evaluate", {{"task": e.task, "source": e.source, "dataset": e.dataset}})
             for evaluations in plan.evaluations.values() for e in evaluations]
    missing_inputs(plan, jobs, {{}})
check_command(["pretrain", "--set", "framework=byol", "--set", "variant=cassle", "--set", "max_steps=2",
               "--out", {str(tmp_path / "run")!r}])
check_command(["eval", "linear", {str(tmp_path / "run")!r}, "--dataset", "cifar10", "--out", {str(tmp_path / "e")!r}])
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", f"planning imported {done.stdout.strip()}"
