"""Logging result folders as MLflow runs: idempotent, parent/child links, never fatal for the job that logs.

A run counts as logged when it is active, FINISHED and carries the digest of the folder's current metrics.json
(``cassle.metrics_sha256``, set last). Other runs with the same ``cassle.result`` (a stale digest, or a run left
unfinished by a crash) are deleted before the folder is logged again.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.apps.tracking.content import (
    DIGEST_TAG,
    PARENT_MISSING_TAG,
    PARENT_TAG,
    RESULT_TAG,
    RunContent,
    read_reports,
    read_result,
)
from cassle.apps.tracking.store import experiment_id, first_line, store_session

if TYPE_CHECKING:
    from mlflow.entities import Run
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


def write_run(client: MlflowClient, experiment: str, content: RunContent, parent_id: str | None) -> str:
    """Create the run and log everything; the digest tag and FINISHED come last, so a crash leaves it incomplete."""
    from mlflow.entities import Metric, Param

    tags = {**content.tags, RESULT_TAG: content.result}
    if content.parent is not None:
        tags[PARENT_TAG] = content.parent
        if parent_id is None:
            tags[PARENT_MISSING_TAG] = "true"
        else:
            tags["mlflow.parentRunId"] = parent_id
    stamp = content.time_ms or int(time.time() * 1000)
    run_id = client.create_run(experiment, start_time=stamp, tags=tags, run_name=content.name).info.run_id
    try:
        metrics = [Metric(key, value, stamp, 0) for key, value in content.metrics.items()]
        metrics += [Metric(key, value, stamp, step) for key, value, step in content.history]
        # MlflowClient.log_batch splits into MLflow's batch limits (100 params/tags, 1000 metrics per request).
        client.log_batch(run_id, metrics=metrics, params=[Param(key, value) for key, value in content.params.items()])
        for path, folder in content.artifacts:
            client.log_artifact(run_id, str(path), folder)
        client.set_tag(run_id, DIGEST_TAG, content.digest)
        client.set_terminated(run_id, "FINISHED", end_time=stamp)
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
        if child.data.tags.get("mlflow.parentRunId") != run_id:
            client.set_tag(child.info.run_id, "mlflow.parentRunId", run_id)
            if PARENT_MISSING_TAG in child.data.tags:
                client.delete_tag(child.info.run_id, PARENT_MISSING_TAG)


def ensure_logged(client: MlflowClient, experiment: str, content: RunContent, results: Path | None) -> tuple[str, bool]:
    """Log ``content`` unless an identical run exists; returns (run id, whether it was logged now). An evaluation's
    pretraining folder is logged first (when it exists under ``results``). Duplicates (two jobs that logged the same
    folder to a server at once) are reduced to one run, the one with the smallest id."""
    runs = sorted(search(client, experiment, RESULT_TAG, content.result), key=lambda run: run.info.run_id)
    done = [run for run in runs if is_logged(run, content)]
    for run in runs:
        if not done or run is not done[0]:
            client.delete_run(run.info.run_id)
    if done:
        if len(runs) > 1 and content.kind == "pretrain":
            _adopt_children(client, experiment, content, done[0].info.run_id)
        return done[0].info.run_id, False
    parent_id = _parent_id(client, experiment, content, results)
    run_id = write_run(client, experiment, content, parent_id)
    if content.kind == "pretrain":
        _adopt_children(client, experiment, content, run_id)
    return run_id, True


def _parent_id(client: MlflowClient, experiment: str, content: RunContent, results: Path | None) -> str | None:
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
