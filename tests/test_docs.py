"""The docs' tables of names are generated from the registries that own the names, so they cannot drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cassle import config, evaluate, methods
from cassle.data import registry

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("doc,table", [
    ("config.md", config.reference_table),
    ("frameworks.md", methods.reference_table),
    ("datasets.md", registry.overview_table),
    ("evaluation.md", evaluate.reference_table),
], ids=["config keys", "frameworks", "datasets", "evaluation tasks"])
def test_each_generated_table_is_in_its_doc(doc: str, table: Callable[[], str]):
    generated = table()
    assert generated.count("\n") >= 4  # a header, its rule and the rows
    assert generated in (DOCS / doc).read_text(encoding="utf-8"), \
        f"docs/{doc} is stale: paste in the table {table.__module__}.{table.__name__}() prints"


def test_a_registered_name_reaches_the_generated_tables():
    """Adding to a registry is all it takes: the new entry is in its table (and so must be documented)."""
    evaluate.EVAL_TASKS.register("probe", "a throw-away task")
    try:
        assert "| `probe` | a throw-away task |" in evaluate.reference_table()
    finally:
        evaluate.EVAL_TASKS.unregister("probe")
