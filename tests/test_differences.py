"""The table of differences from the paper and the authors' code: docs/differences.md holds it as the code renders
it, and the paper grid sets what the table says it sets (and sets nothing else away from the defaults unexplained)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cassle.apps.plan import plan_runs
from cassle.config import RUNTIME_KEYS, flatten
from cassle.differences import DIFFERENCES, differences_table
from cassle.nets import resnet_names

REPO = Path(__file__).resolve().parents[1]
GRID = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_docs_embed_the_table_rendered_from_the_defaults():
    docs = (REPO / "docs" / "differences.md").read_text()
    assert differences_table() in docs, "docs/differences.md is stale: paste cassle.differences.differences_table()"


@pytest.mark.parametrize("row", [row for row in DIFFERENCES if row.grid], ids=lambda row: row.setting)
def test_the_grid_sets_what_the_table_says(row):
    runs = [run for run in plan_runs(GRID).values()
            if (row.framework is None or run.config["framework"] == row.framework)
            and (not row.resnets_only or run.config["backbone"] in resnet_names())]
    assert runs, f"the grid has no run that {row.setting!r} applies to"
    for run in runs:
        for key, value in row.grid.items():
            assert run.config[key] == value, f"{run.name}: {key} = {run.config[key]!r}, the table says {value!r}"


def test_every_default_the_grid_overrides_is_explained():
    """Keys the grid sets for every run are the table's (or say where and how fast a run happens)."""
    explained = {key for row in DIFFERENCES for key in row.grid} | RUNTIME_KEYS
    shared = flatten(GRID["pretrain"]["defaults"])
    assert set(shared) <= explained, sorted(set(shared) - explained)


def test_ours_states_the_current_defaults():
    """A row's text is filled from the code: change a framework's default and its row changes."""
    row = next(row for row in DIFFERENCES if row.setting == "MoCo-v3: momentum rate")
    assert "0.99 -> 1.0" in row.rendered_ours()
    shifted = type(row)(**{**row.__dict__, "ours": "{ema} {queue_size}", "framework": "mocov2"})
    assert shifted.rendered_ours().startswith("0.999 65536")
