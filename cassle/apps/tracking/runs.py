"""Logging result folders as MLflow runs: idempotent, parent/child links, never fatal for the job that logs.

A run counts as logged when it is active, FINISHED and carries the digest of the folder's current metrics.json
(``cassle.metrics_sha256``, set last). Other runs with the same ``cassle.result`` (a stale digest, or a run left
unfinished by a crash) are deleted before the folder is logged again.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassle.apps.tracking.content import (
    DIGEST_TAG,
    LIVE_TAG,
    PARENT_MISSING_TAG,
    PARENT_TAG,
    RESULT_TAG,
    RunContent,
    read_reports,
    read_result,
)
from cassle.apps.tracking.store import experiment_id, first_line, store_session

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput, Run
    from mlflow.tracking import MlflowClient


class TrackingWarning(UserWarning):
    """A result was not mirrored into MLflow (its files are intact; `cassle mlflow sync` backfills a result folder,
    `cassle mlflow log-reports` run again logs a reports folder)."""


class MissingParentWarning(UserWarning):
    """An evaluation was logged without its pretraining run, whose folder does not exist."""


def _quoted(value: str) -> str:
    """``value`` as a literal of MLflow's search syntax."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for {value!r}: it holds both quote characters; rename the folder")


def search(client: MlflowClient, experiment: str, tag: str | None = None, value: str | None = None) -> list[Run]:
    """Every active run of the experiment (all pages), or those whose tag ``tag`` equals ``value``."""
    query = f"tags.`{tag}` = {_quoted(value)}" if tag is not None and value is not None else ""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment], filter_string=query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def is_logged(run: Run, content: RunContent) -> bool:
    """Whether ``run`` is a complete mirror of ``content`` (finished, same metrics.json digest)."""
    return run.info.status == "FINISHED" and run.data.tags.get(DIGEST_TAG) == content.digest


def run_tags(content: RunContent, parent_id: str | None) -> dict[str, str]:
    """The tags a run of ``content`` is created with: its own, its identity, and its parent (or that it has none)."""
    tags = {**content.tags, RESULT_TAG: content.result}
    if content.parent is not None:
        tags[PARENT_TAG] = content.parent
        if parent_id is None:
            tags[PARENT_MISSING_TAG] = "true"
        else:
            tags["mlflow.parentRunId"] = parent_id
    return tags


def create_run(client: MlflowClient, experiment: str, content: RunContent, parent_id: str | None,
               start_ms: int | None, **tags: str) -> str:
    """A new run for ``content`` (status RUNNING) started at ``start_ms`` (None: now), with ``tags`` added."""
    return client.create_run(experiment, start_time=start_ms or now_ms(), tags={**run_tags(content, parent_id), **tags},
                             run_name=content.name).info.run_id


def now_ms() -> int:
    return int(time.time() * 1000)


def logged_points(client: MlflowClient, run: Run | None, keys: Iterable[str]) -> set[tuple[str, int]]:
    """The (key, step) points ``run`` holds of the metrics ``keys`` (none for a new run)."""
    if run is None:
        return set()
    held = set(run.data.metrics) & set(keys)
    return {(key, metric.step) for key in held for metric in client.get_metric_history(run.info.run_id, key)}


def dataset_inputs(datasets: Iterable[Mapping[str, Any]]) -> list[DatasetInput]:
    """MLflow dataset inputs (mlflow.data): name, digest, the root as source, split and size as profile, and the
    role (``mlflow.data.context``: train or eval)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for use in datasets:
        source = json.dumps({"uri": use.get("root") or f"cassle:{use['name']}"})
        profile = json.dumps({"split": use.get("split"), "num_items": use.get("size")})
        dataset = Dataset(name=f"{use['name']}/{use.get('split')}", digest=use.get("digest") or "-",
                          source_type="local" if use.get("root") else "code", source=source, profile=profile)
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", str(use.get("context") or ""))]))
    return inputs


def fill_run(client: MlflowClient, run_id: str, content: RunContent, existing: Run | None = None) -> None:
    """Log into ``run_id`` what it lacks of ``content``: metric points ((key, step) pairs it does not hold, history
    points at their own time), params, tags, dataset inputs and artifacts; then the digest tag and FINISHED at the
    result's end time, last, so that a crash leaves the run incomplete. ``existing``: the run as it was (None: new)."""
    from mlflow.entities import Metric, Param, RunTag

    end = content.end_ms or now_ms()
    keys = {*content.metrics, *(key for key, _, _, _ in content.history)}
    held = logged_points(client, existing, keys)
    metrics = [Metric(key, value, end, 0) for key, value in content.metrics.items() if (key, 0) not in held]
    metrics += [Metric(key, value, stamp or end, step) for key, value, step, stamp in content.history
                if (key, step) not in held]
    old_params = existing.data.params if existing is not None else {}
    params = [Param(key, value) for key, value in content.params.items() if key not in old_params]
    old_tags = existing.data.tags if existing is not None else {}
    tags = [RunTag(key, value) for key, value in {**content.tags, RESULT_TAG: content.result}.items()
            if old_tags.get(key) != value]
    # MlflowClient.log_batch splits into MLflow's batch limits (100 params/tags, 1000 metrics per request).
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    old_inputs = {(item.dataset.name, item.dataset.digest) for item in existing.inputs.dataset_inputs} \
        if existing is not None and existing.inputs is not None else set()
    inputs = [item for item in dataset_inputs(content.datasets)
              if (item.dataset.name, item.dataset.digest) not in old_inputs]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    for path, folder in content.artifacts:
        client.log_artifact(run_id, str(path), folder)
    client.set_tag(run_id, DIGEST_TAG, content.digest)
    client.set_terminated(run_id, "FINISHED", end_time=end)


def write_run(client: MlflowClient, experiment: str, content: RunContent, parent_id: str | None) -> str:
    """Create the run and log everything (:func:`fill_run`); a run cut short is marked FAILED when the store lets."""
    run_id = create_run(client, experiment, content, parent_id, content.start_ms or content.end_ms)
    try:
        fill_run(client, run_id, content)
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the store may be the reason we are here
            pass
        raise
    return run_id


def _adopt_children(client: MlflowClient, experiment: str, content: RunContent, run_id: str) -> None:
    """Point the evaluations of this pretraining folder (logged earlier, standalone or under a stale run) to it."""
    for child in search(client, experiment, PARENT_TAG, content.result):
        _set_parent(client, child, run_id)


def _set_parent(client: MlflowClient, run: Run, parent_id: str | None) -> None:
    """Make ``parent_id`` the parent of ``run`` (no-op for None)."""
    if parent_id is not None and run.data.tags.get("mlflow.parentRunId") != parent_id:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)
        if PARENT_MISSING_TAG in run.data.tags:
            client.delete_tag(run.info.run_id, PARENT_MISSING_TAG)


def is_live(run: Run) -> bool:
    """Whether ``run`` was created by its job while it ran and is not complete yet (no digest)."""
    return LIVE_TAG in run.data.tags and DIGEST_TAG not in run.data.tags


def _later_attempt(run: Run, done: Run) -> bool:
    """Whether the incomplete live ``run`` started after ``done`` was complete: a rerun of a finished folder, still
    running or yet to be completed (never deleted on behalf of the older result)."""
    return is_live(run) and run.info.start_time > (done.info.end_time or 0)


def live_candidate(runs: Sequence[Run], prefer: str | None = None) -> Run | None:
    """The live run a result completes: ``prefer`` when it is among them, else the one started last."""
    live = [run for run in runs if is_live(run)]
    chosen = [run for run in live if run.info.run_id == prefer]
    return (chosen or sorted(live, key=lambda run: (run.info.start_time, run.info.run_id)))[-1] if live else None


def ensure_logged(client: MlflowClient, experiment: str, content: RunContent, results: Path | None,
                  prefer: str | None = None) -> tuple[str, bool]:
    """Log ``content`` unless an identical run exists; returns (run id, whether it was logged now).

    A complete run (FINISHED, this digest) is kept; other runs of the folder are deleted, except live runs started
    after it. Without one, the live run its job created (``prefer``, else the newest) is completed with what it lacks
    (:func:`fill_run`, never a metric point twice); without that either a new run is written. Other runs of the folder
    (older attempts, stale results, runs cut short) are deleted. An evaluation's pretraining folder is logged first
    (when it exists under ``results``). Duplicates of a complete run (two jobs that logged the same folder to a server
    at once) are reduced to one, the one with the smallest id."""
    runs = sorted(search(client, experiment, RESULT_TAG, content.result), key=lambda run: run.info.run_id)
    done = [run for run in runs if is_logged(run, content)]
    if done:
        for run in runs:
            if run is not done[0] and not _later_attempt(run, done[0]):
                client.delete_run(run.info.run_id)
        if len(runs) > 1 and content.kind == "pretrain":
            _adopt_children(client, experiment, content, done[0].info.run_id)
        return done[0].info.run_id, False
    live = live_candidate(runs, prefer)
    for run in runs:
        if run is not live:
            client.delete_run(run.info.run_id)
    parent_id = parent_run_id(client, experiment, content, results)
    if live is not None:
        _set_parent(client, live, parent_id)
        fill_run(client, live.info.run_id, content, existing=live)
        run_id = live.info.run_id
    else:
        run_id = write_run(client, experiment, content, parent_id)
    if content.kind == "pretrain":
        _adopt_children(client, experiment, content, run_id)
    return run_id, True


def parent_run_id(client: MlflowClient, experiment: str, content: RunContent, results: Path | None) -> str | None:
    if content.parent is None or results is None:
        return None
    parent_dir = Path(results) / content.parent
    if not (parent_dir / "metrics.json").is_file():
        warnings.warn(f"{content.result}: its pretraining folder {parent_dir} does not exist (or is unfinished); "
                      f"logged as a standalone run tagged {PARENT_MISSING_TAG}, attached once that folder is logged",
                      MissingParentWarning, stacklevel=2)
        return None
    return ensure_logged(client, experiment, read_result(parent_dir, results), results)[0]


def log_locked(content: RunContent, results: Path | None, uri: str, experiment: str) -> tuple[str, bool]:
    """:func:`ensure_logged` in a store session (under the sqlite lock); store failures raise."""
    with store_session(uri) as client:
        return ensure_logged(client, experiment_id(client, uri, experiment), content, results)


def log_content(content: RunContent, results: Path | None, uri: str, experiment: str) -> str | None:
    """:func:`log_locked` that never raises: on any store failure it warns (naming the URI and the command that logs
    the folder later) and returns None."""
    try:
        return log_locked(content, results, uri, experiment)[0]
    except Exception as error:  # unreachable server, locked or corrupt database, refused request: never fatal
        # sync backfills result folders only: a reports folder is logged by running log-reports again
        later = f"log-reports {content.folder}" if content.kind == "reports" else "sync"
        warnings.warn(f"MLflow store {uri} could not log {content.result} ({first_line(error)}); the files are "
                      f"intact: run `cassle mlflow {later}` (same --tracking-uri / --experiment) to backfill it",
                      TrackingWarning, stacklevel=3)
        return None


def log_result(result_dir: Path, results: Path, uri: str, experiment: str) -> str | None:
    """Log one pretraining or evaluation folder of ``results``; returns its MLflow run id (the existing one when
    this metrics.json is already logged), or None with a TrackingWarning when the store cannot be reached.

    A malformed folder (outside the layout, no metrics.json, invalid JSON) raises ValueError / FileNotFoundError.
    """
    return log_content(read_result(Path(result_dir), Path(results)), Path(results), uri, experiment)


def log_reports(reports_dir: Path, uri: str, experiment: str) -> str | None:
    """Log a reports folder (tables, figures, README, report.html) as its own run ``reports:<folder name>``;
    returns the run id, or None with a TrackingWarning when the store cannot be reached."""
    return log_content(read_reports(Path(reports_dir)), None, uri, experiment)
