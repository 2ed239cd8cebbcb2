"""`cassle data check --root DIR`: which registered datasets are under DIR/<name>, and are they well formed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cassle.data.errors import DatasetNotFoundError
from cassle.data.registry import DATASETS

STATUSES = ("present", "missing", "invalid")


@dataclass(frozen=True)
class CheckResult:
    """One dataset's state under a data root; `counts` are image files per on-disk split, where cheap to count."""

    name: str
    status: str
    message: str
    counts: dict[str, int] = field(default_factory=dict)


def check_dataset(name: str, root: Path) -> CheckResult:
    """Look for dataset `name` at `root` (its own root, e.g. DIR/<name>) without decoding images."""
    spec = DATASETS[name]
    if not root.exists():
        return CheckResult(name, "missing", f"no {root}")
    try:
        counts = spec.check_root(root)
    except DatasetNotFoundError as error:
        return CheckResult(name, "invalid", error.problem)
    return CheckResult(name, "present", f"layout ok at {root}", counts)


def check_roots(root: Path | str) -> list[CheckResult]:
    """One result per dataset that lives in files, each looked for in `root/<name>` (symlinks are followed).

    Procedural datasets (synthetic*) and the generic `folder` entry are not looked for."""
    root = Path(root).expanduser()
    return [check_dataset(name, root / name) for name, spec in DATASETS.items() if spec.checked]


def format_check_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table: dataset, status, image counts per split, message."""
    rows = [("dataset", "status", "images", "message")]
    for result in results:
        counts = ", ".join(f"{split} {count}" for split, count in result.counts.items()) or "-"
        rows.append((result.name, result.status, counts, result.message))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    present = sum(result.status == "present" for result in results)
    return "\n".join(lines + [f"{present} of {len(results)} datasets present"])
