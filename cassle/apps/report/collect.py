"""Reading a results folder: pretraining runs, evaluation results and failed jobs (no MLflow, nothing rerun).

Layout (the contract of docs/report.md):
    RESULTS/pretrain/<run>/metrics.json (+ history.csv)
    RESULTS/eval/<task>/<run>/<dataset>/metrics.json
A folder of that layout without a readable metrics.json is a failed (or unfinished) job: it becomes a `Failure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cassle.core.io import read_json

SETUP_KEYS = ("dataset", "backbone")
EXTERNAL_PREFIX = "external-"


@dataclass(frozen=True)
class PretrainRun:
    """A finished pretraining run folder: its flat config and what it says about itself."""

    name: str
    path: Path
    config: dict[str, Any]
    trained_epochs: float | None
    experiment_hash: str | None
    provenance: dict[str, Any]

    @property
    def framework(self) -> str:
        return self.config["framework"]

    @property
    def variant(self) -> str:
        return self.config.get("variant", "vanilla")

    @property
    def setup(self) -> tuple[str, str]:
        """(pretraining dataset, backbone)."""
        return self.config["dataset"], self.config["backbone"]

    @property
    def history(self) -> Path | None:
        path = self.path / "history.csv"
        return path if path.is_file() else None


@dataclass(frozen=True)
class EvalResult:
    """One evaluation's metrics.json, with the pretraining run it evaluated (None for an external checkpoint)."""

    task: str
    dataset: str
    metrics: dict[str, Any]
    options: dict[str, Any]
    source: dict[str, Any]
    provenance: dict[str, Any]
    path: Path                      # the eval folder RESULTS/eval/<task>/<run>/<dataset>
    run: PretrainRun | None

    @property
    def external(self) -> bool:
        """Evaluated on a checkpoint not trained here (source.kind is not "run")."""
        return self.source.get("kind") != "run"

    @property
    def external_name(self) -> str:
        """The workflow's name of an external checkpoint: the eval folder's <run> part without "external-"
        (the workflow evaluates checkpoint NAME of `external:` into eval/<task>/external-NAME/<dataset>)."""
        return self.path.parent.name.removeprefix(EXTERNAL_PREFIX)


@dataclass(frozen=True)
class Failure:
    """A job folder without a usable result, and why; `task` and `run_name` come from an eval folder's place in
    the layout (eval/<task>/<run>/<dataset>), the only record a failed job leaves."""

    path: Path
    reason: str
    task: str | None = None
    run_name: str | None = None


@dataclass
class Results:
    """Everything found under one results folder."""

    root: Path
    runs: list[PretrainRun] = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _read(path: Path, failures: list[Failure], required: tuple[str, ...], task: str | None = None
          ) -> dict[str, Any] | None:
    """metrics.json as a dict with the `required` keys, or None after recording why not."""
    def fail(reason: str) -> None:
        failures.append(Failure(path.parent, reason, task, path.parent.parent.name if task else None))

    if not path.is_file():
        fail("no metrics.json (the job failed or has not finished)")
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as error:
        fail(f"unreadable metrics.json: {error}")
        return None
    missing = [key for key in required if not isinstance(record, dict) or key not in record]
    if missing:
        fail(f"metrics.json lacks {', '.join(missing)}")
        return None
    return record


def _pretrain_runs(root: Path, failures: list[Failure]) -> list[PretrainRun]:
    runs = []
    for folder in sorted(p for p in (root / "pretrain").glob("*") if p.is_dir()):
        record = _read(folder / "metrics.json", failures, ("config",))
        if record is None:
            continue
        config = record["config"]
        absent = [key for key in ("framework", *SETUP_KEYS) if key not in config]
        if absent:
            failures.append(Failure(folder, f"metrics.json config lacks {', '.join(absent)}"))
            continue
        epochs = record.get("epochs")
        runs.append(PretrainRun(folder.name, folder, config, float(epochs) if epochs is not None else None,
                                record.get("experiment_hash"), record.get("provenance", {})))
    return runs


def _source_run(source: dict[str, Any], folder_run: str, by_name: dict[str, PretrainRun],
                by_path: dict[Path, PretrainRun]) -> PretrainRun | None:
    """The run an eval used: its source.path when that folder was collected, else the folder of that name (the
    results may have moved since), else the eval folder's <run> part."""
    path = Path(str(source.get("path", "")))
    if path.is_absolute() and path.resolve() in by_path:
        return by_path[path.resolve()]
    return by_name.get(path.name) or by_name.get(folder_run)


def _eval_results(root: Path, runs: list[PretrainRun], failures: list[Failure]) -> list[EvalResult]:
    by_name = {run.name: run for run in runs}
    by_path = {run.path.resolve(): run for run in runs}
    results = []
    for stray in sorted((root / "eval").glob("*/*/metrics.json")):  # `--out eval/<task>/<run>` without <dataset>
        failures.append(Failure(stray.parent, f"metrics.json one level too high: move it to {stray.parent}/<dataset>/ "
                                              "(evaluations go to eval/<task>/<run>/<dataset>/)",
                                stray.parent.parent.name, stray.parent.name))
    for folder in sorted(p for p in (root / "eval").glob("*/*/*") if p.is_dir()):
        record = _read(folder / "metrics.json", failures, ("task", "metrics", "source"), folder.parent.parent.name)
        if record is None:
            continue
        source = record["source"]
        run = _source_run(source, folder.parent.name, by_name, by_path) if source.get("kind") == "run" else None
        if source.get("kind") == "run" and run is None:
            failures.append(Failure(folder, f"evaluates run {source.get('path')!r}, which has no finished "
                                            f"pretraining folder under {root / 'pretrain'}", record["task"],
                                    folder.parent.name))
            continue
        results.append(EvalResult(record["task"], record.get("dataset") or folder.name, record["metrics"],
                                  record.get("options", {}), source, record.get("provenance", {}), folder, run))
    return results


def collect(root: Path | str) -> Results:
    """Every pretraining run, evaluation result and failed job under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist; pass --results DIR, the folder holding "
                                "pretrain/<run>/ and eval/<task>/<run>/<dataset>/")
    if not (root / "pretrain").is_dir() and not (root / "eval").is_dir():
        raise FileNotFoundError(f"{root} holds neither pretrain/ nor eval/: it is not a results folder (expected "
                                "pretrain/<run>/metrics.json and eval/<task>/<run>/<dataset>/metrics.json)")
    failures: list[Failure] = []
    runs = _pretrain_runs(root, failures)
    evals = _eval_results(root, runs, failures)
    return Results(root, runs, evals, failures)
