"""Tables, average ranks and figures built from results on disk (`cassle report`).

Kept light: the CLI imports `cassle.apps.report.command` at startup, so pandas and matplotlib are imported only when a
name that needs them is used (`from cassle.apps.report import average_rank` imports pandas then).
"""

from __future__ import annotations

from typing import Any

__all__ = ["average_rank", "build_report"]


def __getattr__(name: str) -> Any:
    if name == "average_rank":
        from cassle.apps.report.rank import average_rank

        return average_rank
    if name == "build_report":
        from cassle.apps.report.build import build_report

        return build_report
    raise AttributeError(f"module 'cassle.apps.report' has no attribute {name!r}")
