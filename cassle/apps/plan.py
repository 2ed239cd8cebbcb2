"""The workflow's plan: a workflow config (config/config.yaml) expanded into pretraining runs and evaluations.

The Snakefile builds its DAG from `plan_workflow`; every check happens here, before any job starts: each run's
pretraining config goes through `cassle.config.resolve`, each evaluation's options through the parser of
`cassle eval TASK`, and every name (group, dataset, task, external checkpoint and its architecture, launcher, `where`
key and value) must be one that its registry holds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cassle.apps.launch import LAUNCHERS
from cassle.config import FIELDS, RUNTIME_KEYS, ConfigError, check_value, flatten, resolve, suggestion
from cassle.core.identity import run_name
from cassle.data import DATASETS
from cassle.evaluate import EVAL_TASKS, task_parser
from cassle.nets import resnet_names

# An external checkpoint's name: it becomes a path part and the `source` wildcard (workflow/rules/common.smk).
EXTERNAL_NAME = re.compile(r"[A-Za-z0-9_]+")


class PlanError(ValueError):
    """A workflow config that cannot be planned; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Run:
    """One pretraining run: its folder name, the keys that define it, its resolved config, the groups using it."""

    name: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    groups: tuple[str, ...]

    def pretrain_args(self) -> list[str]:
        """`--set key=value` arguments of `cassle pretrain` (values as JSON, which YAML reads back unchanged)."""
        args: list[str] = []
        for key, value in sorted(self.overrides.items()):
            args += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]
        return args


@dataclass(frozen=True)
class Evaluation:
    """One `cassle eval TASK SOURCE --dataset DATASET`: SOURCE is a run of the plan or an external checkpoint."""

    task: str
    source: str
    dataset: str
    options: tuple[str, ...] = ()
    external: Path | None = None
    arch: str | None = None
    runtime: tuple[str, ...] = ()  # options that cannot change the result (EVAL_RUNTIME_OPTIONS): never rerun it

    def eval_args(self, results: Path) -> list[str]:
        """The arguments after `cassle eval`, without the runtime options."""
        source = str(self.external) if self.external else str(results / "pretrain" / self.source)
        args = [self.task, source, "--dataset", self.dataset, "--out", str(self.out(results))]
        if self.arch:
            args += ["--arch", self.arch]
        return args + list(self.options)

    def out(self, results: Path) -> Path:
        return results / "eval" / self.task / self.source / self.dataset


@dataclass
class Plan:
    """Runs by name and the evaluations of each task."""

    runs: dict[str, Run] = field(default_factory=dict)
    evaluations: dict[str, list[Evaluation]] = field(default_factory=dict)

    def job_counts(self) -> dict[str, int]:
        """Jobs per workflow rule: pretraining runs, evaluations (every task), the report."""
        return {"pretrain": len(self.runs), "evaluate": sum(self.task_counts().values()), "report": 1}

    def task_counts(self) -> dict[str, int]:
        """Evaluation jobs per task."""
        return {task: len(evals) for task, evals in self.evaluations.items() if evals}


def _grid(group: str, grid: Mapping[str, Sequence[Any]]) -> Iterable[dict[str, Any]]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise PlanError(f"pretrain.groups.{group}.grid.{key} = {values!r}: expected a non-empty list of values")
    keys = list(grid)
    for combination in itertools.product(*(grid[key] for key in keys)):
        yield dict(zip(keys, combination))


def _run_from(group: str, raw: dict[str, Any]) -> Run:
    try:
        config = resolve(raw)
    except ConfigError as error:
        raise PlanError(f"pretrain.groups.{group}: {error}") from None
    name = run_name(config["framework"], config["variant"],
                    {key: value for key, value in config.items() if key not in RUNTIME_KEYS})
    return Run(name, raw, config, (group,))


def plan_runs(workflow_config: Mapping[str, Any]) -> dict[str, Run]:
    """Every (group x grid cell x seed) run; runs with equal configs (e.g. an ablation grid that lists the default
    value, which another group also plans) are one run listed under every group that asks for it."""
    pretrain = workflow_config.get("pretrain") or {}
    defaults = flatten(pretrain.get("defaults") or {})
    seeds = workflow_config.get("seeds") or [0]
    runs: dict[str, Run] = {}
    for group, spec in (pretrain.get("groups") or {}).items():
        base = {**defaults, **flatten(spec.get("config") or {})}
        for cell in _grid(group, spec.get("grid") or {}):
            for seed in seeds:
                run = _run_from(group, {**base, **flatten(cell), "seed": seed})
                known = runs.setdefault(run.name, run)
                if group not in known.groups:
                    runs[run.name] = dataclasses.replace(known, groups=(*known.groups, group))
    if not runs:
        raise PlanError("the workflow config plans no pretraining run: add pretrain.groups.<name>.grid")
    return runs


EVAL_RUNTIME_OPTIONS = frozenset({"device", "workers", "threads", "batch_size"})
"""Options of `cassle eval` that say how, not what, it computes: the workflow passes them outside the rerun triggers."""


def _option_args(options: Mapping[str, Any]) -> tuple[str, ...]:
    args: list[str] = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return tuple(args)


def check_eval_options(task: str, args: Sequence[str]) -> None:
    """Parse `args` with the parser of `cassle eval TASK` (its options only: no torch) so a bad option fails now."""
    parser = task_parser(task)
    probe = ["SOURCE", "--dataset", "synthetic", "--out", "OUT", *args]
    try:
        parser.parse_args(probe)
    except SystemExit:
        raise PlanError(f"evaluations.{task}.options: `cassle eval {task}` does not accept {shlex.join(args)!r} "
                        f"(see `cassle eval {task} --help`)") from None


def _matches(run: Run, where: Mapping[str, Sequence[Any]]) -> bool:
    return all(run.config.get(key) in values for key, values in where.items())


def plan_evaluations(workflow_config: Mapping[str, Any], runs: Mapping[str, Run],
                     check_options: bool = True) -> dict[str, list[Evaluation]]:
    """Every (task x selected run x dataset) evaluation, external checkpoints included."""
    groups = {group for run in runs.values() for group in run.groups}  # every group plans at least one run
    external = workflow_config.get("external") or {}
    plan: dict[str, list[Evaluation]] = {}
    for task, spec in (workflow_config.get("evaluations") or {}).items():
        where_prefix = f"evaluations.{task}"
        if task not in EVAL_TASKS:
            raise PlanError(f"{where_prefix}: unknown evaluation {task!r}; one of {', '.join(EVAL_TASKS)}")
        unknown = sorted(set(spec.get("groups") or []) - groups)
        if unknown:
            raise PlanError(f"{where_prefix}.groups: unknown group(s) {', '.join(unknown)}; "
                            f"pretrain.groups defines {', '.join(sorted(groups))}")
        datasets = spec.get("datasets") or []
        missing = [name for name in datasets if name not in DATASETS]
        if missing:
            raise PlanError(f"{where_prefix}.datasets: unknown dataset(s) {', '.join(map(str, missing))}; "
                            f"registered: {', '.join(DATASETS)}")
        where = spec.get("where") or {}
        bad_keys = [key for key in where if key not in FIELDS]
        if bad_keys:
            raise PlanError(f"{where_prefix}.where: unknown config key(s) "
                            f"{', '.join(key + suggestion(key) for key in bad_keys)} (docs/config.md)")
        for key, values in where.items():  # a misspelt value would silently select no run
            try:
                for value in values:
                    check_value(key, value)
            except ConfigError as error:
                raise PlanError(f"{where_prefix}.where: {error}") from None
        given = spec.get("options") or {}
        options = _option_args({key: value for key, value in given.items() if key not in EVAL_RUNTIME_OPTIONS})
        runtime = _option_args({key: value for key, value in given.items() if key in EVAL_RUNTIME_OPTIONS})
        if check_options:
            check_eval_options(task, options + runtime)
        chosen = [run.name for run in runs.values()
                  if set(run.groups) & set(spec.get("groups") or []) and _matches(run, where)]
        evaluations = [Evaluation(task, name, dataset, options, runtime=runtime) for name in chosen
                       for dataset in datasets]
        for name in spec.get("external") or []:
            if name not in external:
                raise PlanError(f"{where_prefix}.external: {name!r} is not under `external:` "
                                f"(defined: {', '.join(external) or 'none'})")
            if not EXTERNAL_NAME.fullmatch(name):
                raise PlanError(f"external.{name}: the name {name!r} is not allowed; expected letters, digits "
                                "and '_' only")
            checkpoint = external[name]
            if checkpoint.get("arch") not in resnet_names():
                raise PlanError(f"external.{name}.arch = {checkpoint.get('arch')!r}: expected one of "
                                f"{', '.join(resnet_names())} (the architectures a state_dict checkpoint may have)")
            evaluations += [Evaluation(task, f"external-{name}", dataset, options, Path(checkpoint["path"]),
                                       checkpoint.get("arch"), runtime) for dataset in datasets]
        plan[task] = evaluations
    return plan


def plan_workflow(workflow_config: Mapping[str, Any], check_options: bool = True) -> Plan:
    """The whole plan of a (schema-validated) workflow config."""
    launcher = workflow_config.get("launcher", "auto")
    if launcher != "auto" and launcher not in LAUNCHERS:
        raise PlanError(f"launcher = {launcher!r}: expected auto or one of {', '.join(LAUNCHERS)}")
    runs = plan_runs(workflow_config)
    return Plan(runs, plan_evaluations(workflow_config, runs, check_options))


LAUNCH_OPTIONS = ("gpus", "nodes", "cpus_per_task", "mem_gb", "time_min", "partition", "account", "qos", "constraint")
"""Keys of the config's `launch.pretrain` / `launch.eval`, each an option of `cassle launch`."""
SLURM_RESOURCES = {"partition": "slurm_partition", "account": "slurm_account", "qos": "qos",
                   "constraint": "constraint", "cpus_per_task": "cpus_per_task", "nodes": "nodes"}
"""The same keys as resources of Snakemake's Slurm executor (snakemake-executor-plugin-slurm)."""
DEFAULT_WORKFLOW_POLL_S = 60.0
"""`launch.poll_s` unset: seconds between a waiting launcher's looks at its Slurm job (one sacct call each)."""


def resolve_launcher(workflow_config: Mapping[str, Any], kind: str, in_job: bool) -> str:
    """How a job of `kind` runs: in-process (`local`) for the report and inside a job that an executor plugin already
    placed on a node (`in_job`, e.g. Snakemake's Slurm executor); else the config's `launcher`, where `auto` is
    `slurm` when `sbatch` is on PATH (a Slurm login node) and `local` elsewhere."""
    launcher = workflow_config.get("launcher", "auto")
    if kind == "report" or in_job:
        return "local"
    if launcher == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return launcher


def launch_resources(workflow_config: Mapping[str, Any], kind: str, in_job: bool = False) -> dict[str, Any]:
    """Snakemake resources of a job of `kind` (pretrain, eval or report). `launch` holds the options of `cassle
    launch` (launcher, the job's resources, the poll interval, the MLflow mirror); the others are what Snakemake
    schedules with, and what its Slurm executor submits with when a profile chooses it (partition, account, QoS,
    constraint, CPUs, GPUs, memory, time). Resources, unlike params, never make a finished job rerun."""
    launch = workflow_config.get("launch") or {}
    spec = launch.get(kind) or {}
    launcher = resolve_launcher(workflow_config, kind, in_job)
    args = ["--launcher", launcher]
    for key in LAUNCH_OPTIONS:
        if spec.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(spec[key])]
    for option in spec.get("slurm_extra") or []:
        args += ["--slurm-extra", option]
    if launcher != "local":
        args += ["--poll-s", str(launch.get("poll_s") or DEFAULT_WORKFLOW_POLL_S)]
    mlflow = workflow_config.get("mlflow") or {}
    if mlflow.get("enabled", True):
        args += ["--mlflow", str(workflow_config.get("results", "results"))]
        if mlflow.get("system_metrics", False) and kind != "report":
            args.append("--mlflow-system-metrics")
    resources = {"launch": shlex.join(args)}
    if kind == "report":
        return resources
    gpus = spec.get("gpus", 0)
    resources.update({
        "gpus": gpus,  # profiles/local caps the GPUs in use with `resources: [gpus=N]`
        "gpu": gpus,   # the Slurm executor's name for them
        "mem_mb": int(spec.get("mem_gb", 4) * 1024),
        "runtime": spec.get("time_min", 1440),  # minutes, as `cassle launch --time-min`
        "cluster_jobs": 0 if launcher == "local" else 1,  # profiles/slurm caps the Slurm jobs at once
    })
    resources.update({name: spec[key] for key, name in SLURM_RESOURCES.items() if spec.get(key) is not None})
    if spec.get("slurm_extra"):
        resources["slurm_extra"] = " ".join(f"--{option}" for option in spec["slurm_extra"])
    return resources


def job_threads(workflow_config: Mapping[str, Any], kind: str, in_job: bool = False) -> int:
    """The rule's `threads`: a job that runs inside Snakemake's process (the local launcher) gets its CPUs
    (`launch.<kind>.cpus_per_task`, 1 unset); a submitted one is a waiting launcher, one thread (the job's own threads
    follow its cpus_per_task on the node)."""
    if resolve_launcher(workflow_config, kind, in_job) != "local":
        return 1
    return int(((workflow_config.get("launch") or {}).get(kind) or {}).get("cpus_per_task") or 1)


def missing_inputs(plan: Plan, jobs: Iterable[tuple[str, Mapping[str, str]]],
                   data_roots: Mapping[str, str | None]) -> list[str]:
    """What the jobs about to run need and do not find, one message each: a dataset root that is absent or does not
    match the dataset's layout (checked without decoding images), an external checkpoint that is not there. `jobs`
    are (rule, wildcards) pairs, as Snakemake schedules them."""
    roots: dict[str, str | None] = {}
    problems: list[str] = []
    for rule, wildcards in jobs:
        if rule == "pretrain":
            config = plan.runs[wildcards["run"]].config
            roots.setdefault(config["dataset"], config["data_root"] or data_roots.get(config["dataset"]))
        elif rule == "evaluate":
            evaluation = next(e for e in plan.evaluations[wildcards["task"]]
                              if e.source == wildcards["source"] and e.dataset == wildcards["dataset"])
            given = dict(zip(evaluation.options[::2], evaluation.options[1::2])).get("--data-root")
            roots.setdefault(evaluation.dataset, given or data_roots.get(evaluation.dataset))
            if evaluation.external is not None and not evaluation.external.is_file():
                problems.append(f"external checkpoint {evaluation.source.removeprefix('external-')}: "
                                f"{evaluation.external} does not exist (external.<name>.path in the config)")
    for dataset, root in sorted(roots.items()):
        try:
            DATASETS[dataset].check_root(root)
        except FileNotFoundError as error:
            problems.append(str(error).splitlines()[0] + " (layout: docs/datasets.md, `cassle data check`)")
    return sorted(set(problems))
