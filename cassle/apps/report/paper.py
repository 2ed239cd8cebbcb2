"""The paper's printed numbers (paper_values.yaml) and where they apply."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


@dataclass(frozen=True)
class PaperTable:
    """One transcribed table: its columns in the paper's order and the printed value of each (row, column)."""

    name: str
    source: str
    columns: tuple[str, ...]
    values: dict[tuple[str, str], float]          # (row id, column id) -> percent
    setups: dict[str, tuple[str, str]]            # row id -> (pretraining dataset, backbone)
    notes: dict[tuple[str, str], str]

    def value(self, row: str, column: str, setup: tuple[str, str]) -> float | None:
        """The printed value, or None when the paper prints none there or its run used another setup."""
        if self.setups.get(row) != setup:
            return None
        return self.values.get((row, column))

    def rows(self) -> list[str]:
        return list(self.setups)


def _row(name: str, row: str, spec: Any, setups: dict[str, tuple[str, str]], default: str
         ) -> tuple[tuple[str, str], list[float | None]]:
    values, setup = (spec["values"], spec.get("setup", default)) if isinstance(spec, dict) else (spec, default)
    if setup not in setups:
        raise ValueError(f"{PAPER_VALUES}: {name}/{row} names setup {setup!r}; known: {', '.join(setups)}")
    return setups[setup], values


def _notes(name: str, notes: dict[str, str], rows: Iterable[str], columns: Iterable[str]
           ) -> dict[tuple[str, str], str]:
    """Notes keyed "<row id>/<column id>" (both may hold a "/") as (row, column) -> text."""
    cells = {f"{row}/{column}": (row, column) for row in rows for column in columns}
    unknown = [key for key in notes if key not in cells]
    if unknown:
        raise ValueError(f"{PAPER_VALUES}: {name} has notes on {unknown}, which are not a <row>/<column> of it")
    return {cells[key]: text for key, text in notes.items()}


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return yaml.safe_load(PAPER_VALUES.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, PaperTable]:
    """Every transcribed table by name (table2, table3, table4, table7, table8, table9, table10, fewshot)."""
    data = _data()
    setups = {key: (value["dataset"], value["backbone"]) for key, value in data["setups"].items()}
    tables = {}
    for name, spec in data["tables"].items():
        columns = tuple(spec["columns"])
        values: dict[tuple[str, str], float] = {}
        row_setups: dict[str, tuple[str, str]] = {}
        for row, row_spec in spec["rows"].items():
            row_setups[row], printed = _row(name, row, row_spec, setups, spec["setup"])
            if len(printed) != len(columns):
                raise ValueError(f"{PAPER_VALUES}: {name}/{row} has {len(printed)} values for {len(columns)} columns")
            values.update({(row, column): float(v) for column, v in zip(columns, printed) if v is not None})
        notes = _notes(name, spec.get("notes", {}), row_setups, columns)
        tables[name] = PaperTable(name, spec["source"], columns, values, row_setups, notes)
    return tables


def paper_epochs(framework: str) -> float | None:
    """Pretraining epochs of `framework` in the paper's Table 5 (None for frameworks it does not list)."""
    epochs = _data()["pretrain_epochs"].get(framework)
    return None if epochs is None else float(epochs)


def paper_setups() -> set[tuple[str, str]]:
    """(pretraining dataset, backbone) pairs the paper reports."""
    return {setup for table in paper_tables().values() for setup in table.setups.values()}
