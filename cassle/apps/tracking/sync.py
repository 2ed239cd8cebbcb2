"""Backfill MLflow from results/: log every finished result folder that the store lacks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cassle.apps.tracking.content import RESULT_TAG, RunContent, read_result
from cassle.apps.tracking.runs import is_logged, log_locked, search
from cassle.apps.tracking.store import experiment_id, first_line, store_session


@dataclass
class SyncReport:
    """What a sync did, by result identity (folder relative to RESULTS)."""

    uri: str
    experiment: str
    logged: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why the store could not be read at all

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"MLflow sync of {self.uri} (experiment {self.experiment!r}): {len(self.logged)} logged, "
                 f"{len(self.present)} already present, {len(self.failed)} failed"]
        if self.error is not None:
            lines.append(f"  store unreachable: {self.error}")
        lines += [f"  logged  {result}" for result in self.logged]
        lines += [f"  FAILED  {result}: {why}" for result, why in self.failed.items()]
        return "\n".join(lines)


def result_folders(results: Path) -> list[Path]:
    """Every finished result folder (one holding metrics.json): pretraining runs first, then evaluations."""
    results = Path(results)
    pretrain = sorted(path.parent for path in results.glob("pretrain/*/metrics.json"))
    evaluations = sorted(path.parent for path in results.glob("eval/*/*/*/metrics.json"))
    return pretrain + evaluations


def sync(results: Path, uri: str, experiment: str) -> SyncReport:
    """Log every result folder of ``results`` that has no complete run in the store (idempotent: a second sync logs
    nothing). Never raises for an unreachable store or a malformed folder: the report lists them as failed."""
    results = Path(results)
    report = SyncReport(uri, experiment)
    contents: list[RunContent] = []
    for folder in result_folders(results):
        try:
            contents.append(read_result(folder, results))
        except (OSError, ValueError) as error:
            report.failed[folder.relative_to(results).as_posix()] = first_line(error)
    try:
        with store_session(uri) as client:
            existing = defaultdict(list)
            for run in search(client, experiment_id(client, uri, experiment)):
                existing[run.data.tags.get(RESULT_TAG)].append(run)
    except Exception as error:  # unreachable or broken store: nothing can be synced
        report.error = first_line(error)
        report.failed.update({content.result: "store unreachable" for content in contents})
        return report
    for content in contents:
        runs = existing[content.result]
        if len(runs) == 1 and is_logged(runs[0], content):
            report.present.append(content.result)
            continue
        try:
            _, logged = log_locked(content, results, uri, experiment)
        except Exception as error:  # keep going: one refused run must not stop the backfill
            report.failed[content.result] = first_line(error)
            continue
        (report.logged if logged else report.present).append(content.result)
    return report
