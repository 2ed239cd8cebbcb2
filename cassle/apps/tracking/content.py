"""What one result folder becomes in MLflow: params, metrics, tags, artifacts (pure Python, no MLflow import).

A pretraining folder ``RESULTS/pretrain/<run>`` and an evaluation folder ``RESULTS/eval/<task>/<run>/<dataset>`` are
read into a :class:`RunContent`; a ``reports/`` folder too. The logging itself lives in :mod:`cassle.apps.tracking.runs`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cassle.core.io import file_sha256, read_csv_rows, read_json

RESULT_TAG = "cassle.result"
DIGEST_TAG = "cassle.metrics_sha256"
PARENT_TAG = "cassle.parent"
PARENT_MISSING_TAG = "cassle.parent_missing"
LIVE_TAG = "cassle.live"  # the run was created by the job while it ran (cassle.apps.tracking.live)
TIME_COLUMN = "time"  # history.csv's wall-clock column (Unix seconds): the points' timestamps, not a metric

MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_LENGTH = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_TRUNCATED = " ...[truncated: the full value is in metrics.json]"
_FIGURES = (".png", ".pdf")
_RESULT_FILES = ("metrics.json", "history.csv")
_REPORT_FILES = (".md", ".tex", ".csv", ".png", ".pdf", ".svg", ".html", ".json")
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")
_RUN_NAME = re.compile(r"(?P<framework>[A-Za-z0-9_]+)-(?P<variant>[A-Za-z0-9_]+)-[0-9a-f]{8}")


@dataclass(frozen=True)
class RunContent:
    """Everything logged for one result folder.

    ``result`` is the run's identity (tag ``cassle.result``): the folder relative to RESULTS, or ``reports:<name>``;
    ``digest`` (tag ``cassle.metrics_sha256``) is the sha256 of its metrics.json (of every file, for reports);
    ``parent`` is the identity of the pretraining run an evaluation belongs to; ``start_ms`` and ``end_ms`` when the
    computation started and when its result was written (ms since the epoch); ``history`` holds (key, value, step,
    time in ms or None) points; ``datasets`` the splits read (``cassle.core.observe.DatasetUse`` fields).
    """

    result: str
    kind: str
    name: str
    digest: str
    folder: Path
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[tuple[str, float, int, int | None]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    start_ms: int | None = None
    end_ms: int | None = None
    parent: str | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)


def result_identity(result_dir: Path, results: Path, option: str = "--results") -> PurePosixPath:
    """``result_dir`` relative to ``results``, checked against the layout ``pretrain/<run>`` or
    ``eval/<task>/<run>/<dataset>``; ``option`` is the command-line option that names ``results``."""
    try:
        relative = PurePosixPath(Path(result_dir).resolve().relative_to(Path(results).resolve()).as_posix())
    except ValueError:
        raise ValueError(f"result folder {str(result_dir)!r} is not inside the results folder {str(results)!r}; "
                         f"pass the results folder it belongs to with {option}") from None
    parts = relative.parts
    if not ((len(parts) == 2 and parts[0] == "pretrain") or (len(parts) == 4 and parts[0] == "eval")):
        raise ValueError(f"result folder {str(result_dir)!r} is {str(relative)!r} inside {str(results)!r}; expected "
                         "pretrain/<run> or eval/<task>/<run>/<dataset> (the layout cassle pretrain / eval write)")
    return relative


def read_result(result_dir: Path, results: Path) -> RunContent:
    """Read a pretraining or evaluation folder (its metrics.json must exist) into a :class:`RunContent`."""
    result_dir = Path(result_dir)
    relative = result_identity(result_dir, results)
    metrics_file = result_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} does not exist: {result_dir} holds no finished result "
                                "(cassle pretrain / cassle eval write metrics.json last)")
    data = metrics_file.read_bytes()  # one read: the digest and the content agree even if the file is replaced
    try:
        record = json.loads(data)
    except ValueError as error:
        raise ValueError(f"{metrics_file} is not valid JSON ({error}); rerun the job that wrote it") from None
    if not isinstance(record, dict):
        raise ValueError(f"{metrics_file} holds a JSON {type(record).__name__}; expected an object")
    digest = hashlib.sha256(data).hexdigest()
    if relative.parts[0] == "pretrain":
        return _pretrain_content(result_dir, str(relative), record, digest)
    task, run, dataset = relative.parts[1:]
    parent_dir = Path(results) / "pretrain" / run
    return _eval_content(result_dir, str(relative), record, digest, task, run, dataset, parent_dir)


def _pretrain_content(folder: Path, result: str, record: dict[str, Any], digest: str) -> RunContent:
    config = record.get("config") or {}
    provenance = record.get("provenance") or {}
    # Summary numbers (steps, epochs, samples_per_s, ...) join `final` under final/: history.csv has a
    # samples_per_s column of its own.
    summary = {key: value for key, value in record.items() if key not in ("config", "provenance", "final")}
    final = {"final": {**summary, **(record.get("final") or {})}}
    tags = {**_pretrain_tags(folder.name, config, record), **_provenance_tags(provenance, folder)}
    return RunContent(result=result, kind="pretrain", name=folder.name, digest=digest, folder=folder,
                      params=_params(config), metrics=_metrics(final), history=_history(folder / "history.csv"),
                      tags=_clean_tags(tags), artifacts=_artifacts(folder), **_times(provenance),
                      datasets=_datasets(record))


def _pretrain_tags(run: str, config: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "pretrain", "task": "pretrain", "run": run, "dataset": config.get("dataset"),
            "experiment_hash": record.get("experiment_hash"), **_model_tags(record, config)}


def _eval_tags(task: str, run: str, dataset: str, parent: Mapping[str, Any]) -> dict[str, Any]:
    """kind, task, run, dataset and the model tags of the pretraining run (its metrics.json, else the run name)."""
    named = _RUN_NAME.fullmatch(run)
    if parent:
        model = _model_tags(parent, parent.get("config") or {})
    else:  # no pretraining folder: framework and variant from the run name, when it follows run_name()
        model = named.groupdict() if named else {}
    return {"kind": "eval", "task": task, "run": run, "dataset": dataset,
            "experiment_hash": parent.get("experiment_hash"), **model}


def _eval_content(folder: Path, result: str, record: dict[str, Any], digest: str, task: str, run: str,
                  dataset: str, parent_dir: Path) -> RunContent:
    provenance = record.get("provenance") or {}
    task, dataset = record.get("task", task), record.get("dataset", dataset)
    tags = {**_eval_tags(task, run, dataset, _readable_json(parent_dir / "metrics.json")),
            **_provenance_tags(provenance, folder)}
    params = {"task": task, "dataset": dataset, **_params(record.get("options") or {}),
              **_params(record.get("source") or {}, prefix="source.")}
    return RunContent(result=result, kind="eval", name=f"{task}/{dataset}", digest=digest, folder=folder,
                      params=params, metrics=_metrics(record.get("metrics") or {}), tags=_clean_tags(tags),
                      artifacts=_artifacts(folder), **_times(provenance), parent=f"pretrain/{run}",
                      datasets=_datasets(record))


def live_content(result_dir: Path, results: Path, config: Mapping[str, Any] | None = None,
                 option: str = "--mlflow") -> RunContent:
    """What a job's run holds from its start, before its folder has a result: its identity, name, tags, params (the
    pretraining config; task and dataset for an evaluation) and its parent. No digest: the run is incomplete.
    ``option`` names ``results`` in the error raised for a folder outside its layout."""
    result_dir = Path(result_dir)
    relative = result_identity(result_dir, results, option)
    if relative.parts[0] == "pretrain":
        config = dict(config or {})
        tags = _pretrain_tags(result_dir.name, config, {"experiment_hash": None})
        return RunContent(result=str(relative), kind="pretrain", name=result_dir.name, digest="", folder=result_dir,
                          params=_params(config), tags=_clean_tags(tags))
    task, run, dataset = relative.parts[1:]
    tags = _eval_tags(task, run, dataset, _readable_json(Path(results) / "pretrain" / run / "metrics.json"))
    return RunContent(result=str(relative), kind="eval", name=f"{task}/{dataset}", digest="", folder=result_dir,
                      params={"task": task, "dataset": dataset}, tags=_clean_tags(tags), parent=f"pretrain/{run}")


def _readable_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing or unreadable (only tags are taken from it)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_reports(reports_dir: Path) -> RunContent:
    """Read a reports folder (tables, figures, README) into a :class:`RunContent` whose identity is
    ``reports:<folder name>`` and whose digest covers every file logged."""
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise FileNotFoundError(f"reports folder {reports_dir} does not exist; build it first with `cassle report`")
    files = sorted(path for path in reports_dir.rglob("*") if path.is_file() and path.suffix in _REPORT_FILES
                   and not any(part.startswith(".") for part in path.relative_to(reports_dir).parts))
    if not files:
        raise ValueError(f"reports folder {reports_dir} holds no table or figure ({', '.join(_REPORT_FILES)})")
    digest = hashlib.sha256()
    artifacts: list[tuple[Path, str | None]] = []
    for path in files:
        relative = path.relative_to(reports_dir)
        digest.update(f"{relative.as_posix()}\0{file_sha256(path)}\n".encode())
        artifacts.append((path, relative.parent.as_posix() if relative.parent != Path(".") else None))
    written = [int(path.stat().st_mtime * 1000) for path in files]
    return RunContent(result=f"reports:{reports_dir.resolve().name}", kind="reports", name=reports_dir.resolve().name,
                      digest=digest.hexdigest(), folder=reports_dir, tags={"kind": "reports"}, artifacts=artifacts,
                      start_ms=min(written), end_ms=max(written))


def _model_tags(record: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """framework, variant, and the omega keys / injection the variant actually uses."""
    variant = record.get("variant", config.get("variant"))
    tags = {"framework": record.get("framework", config.get("framework")), "variant": variant}
    if variant == "cassle":
        tags["omega_keys"] = ",".join(config.get("conditioning.omega_keys") or [])
        tags["injection"] = config.get("conditioning.injection")
    elif variant == "augself":
        tags["omega_keys"] = ",".join(sorted(config.get("augself.weights") or {}))
    return tags


def _provenance_tags(provenance: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """config hash, git commit and Slurm job id (metrics.json provenance, else ``work/slurm_job_id``)."""
    slurm = provenance.get("slurm_job_id")
    job_file = folder / "work" / "slurm_job_id"
    if not slurm and job_file.is_file():
        slurm = job_file.read_text(encoding="utf-8").strip() or None
    return {"config_hash": provenance.get("config_hash"), "git_sha": provenance.get("git_sha"),
            "mlflow.source.git.commit": provenance.get("git_sha"), "slurm_job_id": slurm}


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Drop unknown (None/empty) values; cap the length at MLflow's tag limit."""
    return {key: _capped(str(value), MAX_TAG_LENGTH) for key, value in tags.items() if value not in (None, "")}


def time_ms(stamp: Any) -> int | None:
    """An ISO 8601 time in ms since the epoch; None when absent or unreadable."""
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000) if isinstance(stamp, str) else None
    except ValueError:
        return None


def _times(provenance: Mapping[str, Any]) -> dict[str, int | None]:
    """start_ms and end_ms of a result: ``provenance.started_utc`` (when the computation started; results written
    before cassle recorded it: the end) and ``provenance.time_utc`` (when the result was written)."""
    end = time_ms(provenance.get("time_utc"))
    return {"start_ms": time_ms(provenance.get("started_utc")) or end, "end_ms": end}


def _datasets(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset splits a result lists (``datasets``: name, split, root, size, digest, context)."""
    found = record.get("datasets")
    return [dict(item) for item in found if isinstance(item, Mapping) and item.get("name")] \
        if isinstance(found, list) else []


def _flatten(mapping: Mapping[str, Any], separator: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, separator, f"{prefix}{key}{separator}")
        else:
            yield f"{prefix}{key}", value


def mlflow_name(key: str) -> str:
    """A valid MLflow param/metric name: '@' -> '_at_', other characters MLflow refuses -> '_', no empty or
    path-like segments (``recall@1`` -> ``recall_at_1``)."""
    name = _BAD_NAME_CHARS.sub("_", key.replace("@", "_at_"))
    return "/".join(part if part not in ("", ".", "..") else "_" for part in name.split("/"))


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - len(_TRUNCATED)] + _TRUNCATED


def _params(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested keys joined with '.', values as in the JSON file (strings bare), capped at MLflow's length limit."""
    params: dict[str, str] = {}
    for key, value in _flatten(mapping, ".", prefix):
        text = value if isinstance(value, str) else json.dumps(value)
        params.setdefault(mlflow_name(key), _capped(text, MAX_PARAM_LENGTH))
    return params


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (bools and everything else: None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metrics(mapping: Mapping[str, Any]) -> dict[str, float]:
    """Numeric leaves, nested keys joined with '/'; lists, strings, bools and nulls are skipped."""
    metrics: dict[str, float] = {}
    for key, value in _flatten(mapping, "/"):
        number = _number(value)
        if number is not None:
            metrics.setdefault(mlflow_name(key), number)
    return metrics


def _history(path: Path) -> list[tuple[str, float, int, int | None]]:
    """Every numeric cell of history.csv as (column, value, step, time in ms of the row's ``time`` column or None);
    empty or non-numeric cells are skipped."""
    if not path.is_file():
        return []
    points: dict[tuple[str, int], tuple[float, int | None]] = {}
    for row in read_csv_rows(path):
        try:
            step = int(float(row.get("step") or ""))
        except ValueError:
            continue
        stamp = _number_cell(row.get(TIME_COLUMN))
        for column, cell in row.items():
            if column in ("step", TIME_COLUMN) or column is None:
                continue
            value = _number_cell(cell)
            if value is not None:
                points[(mlflow_name(column), step)] = (value, None if stamp is None else int(stamp * 1000))
    return [(key, value, step, stamp) for (key, step), (value, stamp) in points.items()]


def _number_cell(cell: str | None) -> float | None:
    try:
        return float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _artifacts(folder: Path) -> list[tuple[Path, str | None]]:
    """metrics.json, history.csv and the figures at the folder's top level (never checkpoints or features/)."""
    return [(path, None) for path in sorted(folder.iterdir())
            if path.is_file() and not path.name.startswith(".")
            and (path.name in _RESULT_FILES or path.suffix.lower() in _FIGURES)]
