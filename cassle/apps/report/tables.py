"""The paper's tables built from one setup's results: rows = methods, columns = tasks, cells = mean over seeds.

Values are percent (metrics.json holds fractions). A cell without a result stays empty (rendered as missing); a
result whose metrics.json lacks the metric is recorded in `SetupResults.problems` (listed in the index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cassle.apps.report.collect import EvalResult, PretrainRun
from cassle.apps.report.paper import PaperTable, paper_tables
from cassle.apps.report.rank import average_rank
from cassle.apps.report.select import (
    ABLATION_FRAMEWORK,
    NO_PROJECTOR_FRAMEWORK,
    SetupResults,
    augself_keys,
    dataset_label,
    encoder_size,
    framework_label,
    injection,
    omega_keys,
)
from cassle.augment import OMEGA_LETTERS
from cassle.methods import VARIANTS
from cassle.nets import INJECTIONS

CORRUPTIONS = ("brightness", "frost", "fog", "snow")
AVG_RANK = "avg_rank"
TITLES = {"table2": "Table 2", "table3": "Table 3", "table4": "Table 4", "table7": "Table 7", "table8": "Table 8",
          "table9": "Table 9", "table10": "Table 10", "fewshot": "Few-shot table"}
LINEAR_METRICS = ("top1", "class_avg", "r2")
PAPER_METRIC = {"r2": "r2_authors"}  # the metrics.json entry that holds a linear metric as the paper computes it

Extract = Callable[[EvalResult], dict[str, Any]]


@dataclass(frozen=True)
class Column:
    """A table column: `key` is "<dataset>" or "<dataset>/<metric>" (or "avg_rank")."""

    key: str
    label: str
    higher_is_better: bool = True
    latex: str | None = None


@dataclass
class Cell:
    """The values (percent) of one (row, column): one per seed / run."""

    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None below two values)."""
        if len(self.values) < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1))


@dataclass
class Row:
    """A method: `key` identifies it across tables and in paper_values.yaml (e.g. "mocov2/cassle")."""

    block: str
    key: str
    label: str
    latex: str
    runs: list[PretrainRun]
    results: list[EvalResult]
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Table:
    """One table of one setup."""

    name: str                     # file stem without the setup: table2, ..., fewshot
    caption: str
    ctx: SetupResults
    columns: list[Column]
    rows: list[Row]
    paper: PaperTable

    @property
    def stem(self) -> str:
        return f"{self.name}_{self.ctx.setup.name}"

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def paper_value(self, row: Row, column: Column) -> float | None:
        return self.paper.value(row.key, column.key, self.ctx.setup.key)

    def blocks(self) -> list[tuple[str, list[Row]]]:
        """Rows grouped by block, in order."""
        groups: dict[str, list[Row]] = {}
        for row in self.rows:
            groups.setdefault(row.block, []).append(row)
        return list(groups.items())

    def frame(self, columns: Sequence[str] | None = None, rows: Sequence[Row] | None = None) -> pd.DataFrame:
        """Means as a pandas DataFrame (index: row keys, NaN where missing)."""
        keys = [c.key for c in self.columns] if columns is None else list(columns)
        chosen = self.rows if rows is None else rows
        data = {key: [row.cells[key].mean if key in row.cells and row.cells[key].n else math.nan for row in chosen]
                for key in keys}
        return pd.DataFrame(data, index=[row.key for row in chosen], dtype=float)

    @property
    def results(self) -> list[EvalResult]:
        return [result for row in self.rows for result in row.results]

    @property
    def runs(self) -> list[PretrainRun]:
        return [run for row in self.rows for run in row.runs]


# --- what each task's metrics.json gives ----------------------------------------------------------------------------

def _linear(result: EvalResult) -> dict[str, Any]:
    """The linear score in the paper's metric: for regression (300W) the authors' pooled squared correlation
    `r2_authors`, which the paper reports, not scikit-learn's `r2_score` (docs/evaluation.md)."""
    metric = result.options.get("metric") or next((m for m in LINEAR_METRICS if m in result.metrics), "top1")
    return {"": result.metrics.get(PAPER_METRIC.get(metric, metric))}


def _rotation(result: EvalResult) -> dict[str, Any]:
    return {"": result.metrics.get("top1")}


def _corruption(result: EvalResult) -> dict[str, Any]:
    names = [*result.options.get("corruptions", CORRUPTIONS), "clean"]
    return {name: result.metrics.get(name) for name in names}


def _detection(result: EvalResult) -> dict[str, Any]:
    return {name: result.metrics.get(name) for name in ("AP", "AP50", "AP75")}


def _fewshot(result: EvalResult) -> dict[str, Any]:
    found = {key: value.get("accuracy") for key, value in result.metrics.items() if isinstance(value, dict)}
    return found or {"5way_1shot": None}


def _sub_label(sub: str) -> str:
    if sub.endswith("shot") and "way_" in sub:
        ways, shots = sub[: -len("shot")].split("way_")
        return f"{shots}-shot" if ways == "5" else f"{ways}-way {shots}-shot"
    return sub if sub.isupper() else sub.capitalize()


_LATEX_SPECIAL = str.maketrans({"\\": r"\textbackslash{}", **{char: "\\" + char for char in "&%$#_{}"}})


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return text.translate(_LATEX_SPECIAL)


def _column(key: str, single_dataset: bool) -> Column:
    dataset, _, sub = key.partition("/")
    name = dataset_label(dataset)
    label = name if not sub else _sub_label(sub) if single_dataset else f"{name} {_sub_label(sub)}"
    return Column(key, label, latex=latex_escape(label))


def _column_key(dataset: str, sub: str) -> str:
    return f"{dataset}/{sub}" if sub else dataset


def _fill(ctx: SetupResults, rows: list[Row], extract: Extract) -> list[str]:
    """Put every row's results into its cells; returns the column keys found, in order of first appearance."""
    found: dict[str, None] = {}
    for row in rows:
        for result in row.results:
            for sub, value in extract(result).items():
                key = _column_key(result.dataset, sub)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    ctx.problems.append((result, f"metrics.json lacks the {result.task} score "
                                                 f"{sub + ' ' if sub else ''}(its metrics: "
                                                 f"{', '.join(sorted(result.metrics)) or 'none'})"))
                    continue
                row.cells.setdefault(key, Cell()).values.append(100.0 * value)
                found[key] = None
    return list(found)


def _columns(found: Sequence[str], pinned: Sequence[str], name_dataset: bool) -> list[Column]:
    """`pinned` columns in their order, then the others found; labels name the dataset when `name_dataset` or
    when the columns span several datasets."""
    keys = [*pinned, *(key for key in found if key not in pinned)]
    single = not name_dataset and len({key.partition("/")[0] for key in keys}) == 1
    return [_column(key, single) for key in keys]


def _make(ctx: SetupResults, name: str, caption: str, rows: list[Row], extract: Extract, paper_name: str,
          pin_paper_columns: bool = True, name_dataset: bool = False) -> Table | None:
    """The table, or None when it has no rows or no columns (no result, outside the paper's setup)."""
    if not rows:
        return None
    found = _fill(ctx, rows, extract)
    paper = paper_tables()[paper_name]
    pin = pin_paper_columns and ctx.setup.key in set(paper.setups.values())
    pinned = [column for column in paper.columns if column != AVG_RANK] if pin else []
    columns = _columns(found, pinned, name_dataset)
    return Table(name, caption, ctx, columns, rows, paper) if columns else None


# --- rows ------------------------------------------------------------------------------------------------------------

def _run_row(ctx: SetupResults, task: str, block: str, key: str, label: str, runs: list[PretrainRun],
             latex: str | None = None) -> Row:
    return Row(block, key, label, latex or latex_escape(label), runs, ctx.evals_of(runs, task))


def _has_task(ctx: SetupResults, framework: str, task: str) -> bool:
    """Whether any run of `framework` has a result, or a failed job, for `task`."""
    names = {run.name for run in ctx.runs if run.framework == framework}
    if any(result.task == task and result.run and result.run.name in names for result in ctx.evals):
        return True
    return any(failure.task == task and failure.run_name in names for failure in ctx.failures)


def method_label(framework: str, variant: str) -> str:
    """A method named outside its framework's block: "MoCo-v2", "MoCo-v2 + CASSLE", ..."""
    name = framework_label(framework)
    return name if variant == "vanilla" else f"{name} + {VARIANTS[variant]}"


def grid_rows(ctx: SetupResults, task: str, frameworks: Iterable[str]) -> list[Row]:
    """Framework x variant rows of the default configuration (blocks = frameworks)."""
    rows = []
    for framework in frameworks:
        for variant in VARIANTS:
            runs = ctx.runs_where(framework, variant)
            if runs:
                rows.append(_run_row(ctx, task, framework_label(framework), f"{framework}/{variant}",
                                     VARIANTS[variant], runs))
    return rows


def _letters(keys: frozenset[str]) -> str:
    return ",".join(letter for key, letter in OMEGA_LETTERS.items() if key in keys)


def _omega_label(keys: frozenset[str]) -> tuple[str, str]:
    letters = _letters(keys)
    return f"ω{{{letters}}}", rf"$\omega^{{\{{{letters}\}}}}$"


def _order(keys: frozenset[str]) -> tuple[int, ...]:
    order = list(OMEGA_LETTERS)
    return (len(keys), *sorted(order.index(key) for key in keys))


def _omega_block(ctx: SetupResults, by_keys: dict[frozenset[str], list[PretrainRun]]) -> list[Row]:
    block = "Augmentation information contents"
    rows = []
    for keys, runs in sorted(by_keys.items(), key=lambda item: _order(item[0])):
        label, latex = _omega_label(keys)
        rows.append(_run_row(ctx, "linear", block, f"omega/{_letters(keys)}", label, runs, latex))
    return rows


def _color_diff_block(ctx: SetupResults, by_keys: dict[frozenset[str], list[PretrainRun]]) -> list[Row]:
    """CASSLE key sets that come with and without the colour difference, and every AugSelf target set."""
    block, diff = "Colour difference information: CASSLE vs AugSelf", "color_diff"
    augself: dict[frozenset[str], list[PretrainRun]] = {}
    for run in ctx.runs:
        if run.framework == ABLATION_FRAMEWORK and run.variant == "augself":
            augself.setdefault(augself_keys(run), []).append(run)
    paired = {keys: runs for keys, runs in by_keys.items() if {keys | {diff}, keys - {diff}} <= set(by_keys)}
    if not paired or not augself:
        return []
    entries = [("cassle", keys, runs) for keys, runs in paired.items()]
    entries += [("augself", keys, runs) for keys, runs in augself.items()]
    entries.sort(key=lambda e: (_order(e[1] - {diff}), diff in e[1], e[0] != "cassle"))
    rows = []
    for variant, keys, runs in entries:
        label, latex = _omega_label(keys)
        name = VARIANTS[variant]
        rows.append(_run_row(ctx, "linear", block, f"color_diff/{variant}:{_letters(keys)}", f"{name} {label}",
                             runs, f"{name} {latex}"))
    return rows


def _injection_block(ctx: SetupResults) -> list[Row]:
    block = "Method of conditioning the projector"
    groups = ctx.ablation("injection", injection)
    return [_run_row(ctx, "linear", block, f"injection/{name}", label, groups[name])
            for name, label in INJECTIONS.items() if name in groups]


def _encoder_block(ctx: SetupResults, block: str, prefix: str, axis: int) -> list[Row]:
    """Runs whose augmentation encoder differs from the default only along `axis` (0: depth, 1: width)."""
    fixed = ctx.encoder[1 - axis]
    groups = ctx.ablation("encoder", lambda run: encoder_size(run)[axis],
                          lambda run: encoder_size(run)[1 - axis] == fixed)
    return [_run_row(ctx, "linear", block, f"{prefix}/{size}", str(size), runs)
            for size, runs in sorted(groups.items())]


def ablation_rows(ctx: SetupResults) -> list[Row]:
    """Table 4's five blocks (MoCo-v2 CASSLE ablations); a block is kept when it compares at least two rows."""
    by_keys = ctx.ablation("omega_keys", omega_keys)
    blocks = [_omega_block(ctx, by_keys), _color_diff_block(ctx, by_keys), _injection_block(ctx),
              _encoder_block(ctx, "Depth of the augmentation encoder (0: raw omega)", "depth", 0),
              _encoder_block(ctx, "Hidden size of the augmentation encoder", "width", 1)]
    return [row for rows in blocks if len(rows) >= 2 for row in rows]


def add_average_rank(table: Table) -> None:
    """Append the Avg. rank column, computed per block over the table's task columns (lower is better)."""
    tasks = [column for column in table.columns if column.key != AVG_RANK]
    directions = {column.key: column.higher_is_better for column in tasks}
    for _, rows in table.blocks():
        frame = table.frame([column.key for column in tasks], rows).dropna(axis=1, how="all")
        ranks = average_rank(frame, {key: directions[key] for key in frame.columns})
        for row in rows:
            if not math.isnan(ranks[row.key]):
                row.cells[AVG_RANK] = Cell([float(ranks[row.key])])
    table.columns.append(Column(AVG_RANK, "Avg. rank ↓", higher_is_better=False, latex=r"Avg.\ rank $\downarrow$"))


# --- the tables ----------------------------------------------------------------------------------------------------

def _shown(ctx: SetupResults, task: str, frameworks: Iterable[str]) -> list[str]:
    return [framework for framework in frameworks if _has_task(ctx, framework, task)]


def _main_frameworks(ctx: SetupResults) -> list[str]:
    return [framework for framework in ctx.frameworks() if framework != NO_PROJECTOR_FRAMEWORK]


def table2(ctx: SetupResults) -> Table | None:
    return _make(ctx, "table2", "Linear evaluation on downstream classification and regression tasks",
                 grid_rows(ctx, "linear", _main_frameworks(ctx)), _linear, "table2")


def table3(ctx: SetupResults) -> Table | None:
    return _make(ctx, "table3", "Object detection (VOC07, frozen backbone): average precision",
                 grid_rows(ctx, "detection", _shown(ctx, "detection", ctx.frameworks())), _detection, "table3")


def table4(ctx: SetupResults) -> Table | None:
    table = _make(ctx, "table4", f"Ablations of {framework_label(ABLATION_FRAMEWORK)} + CASSLE (linear evaluation, "
                  "average rank per block)", ablation_rows(ctx), _linear, "table4")
    if table is not None:
        add_average_rank(table)
    return table


def table7(ctx: SetupResults) -> Table | None:
    return _make(ctx, "table7", "Linear evaluation on predicting image rotation (0/90/180/270 degrees)",
                 grid_rows(ctx, "rotation", _shown(ctx, "rotation", ctx.frameworks())), _rotation, "table7")


def table8(ctx: SetupResults) -> Table | None:
    return _make(ctx, "table8", "Classification under weather corruptions (mean over severities 1-5)",
                 grid_rows(ctx, "corruption", _shown(ctx, "corruption", ctx.frameworks())), _corruption, "table8")


def table9(ctx: SetupResults) -> Table | None:
    """MoCo-v2 vanilla and CASSLE against every external checkpoint with linear results, in one block (as the
    paper: the best of each column is bold across all of them)."""
    externals = ctx.externals_by_name("linear")
    if not externals:
        return None
    rows = [_run_row(ctx, "linear", "", f"{ABLATION_FRAMEWORK}/{variant}", method_label(ABLATION_FRAMEWORK, variant),
                     runs)
            for variant in ("vanilla", "cassle") if (runs := ctx.runs_where(ABLATION_FRAMEWORK, variant))]
    rows += [Row("", f"external/{name}", name, latex_escape(name), [], results) for name, results in externals.items()]
    return _make(ctx, "table9", "Linear evaluation: MoCo-v2 against checkpoints trained elsewhere", rows, _linear,
                 "table9")


def table10(ctx: SetupResults) -> Table | None:
    return _make(ctx, "table10", "Linear evaluation of MoCo-v1 (no projector; CASSLE adds the omega embedding)",
                 grid_rows(ctx, "linear", [NO_PROJECTOR_FRAMEWORK]), _linear, "table10")


def fewshot(ctx: SetupResults) -> Table | None:
    return _make(ctx, "fewshot", "Few-shot classification (N-way K-shot logistic regression, mean accuracy over "
                 "tasks), as AugSelf's table", grid_rows(ctx, "fewshot", _shown(ctx, "fewshot", ctx.frameworks())),
                 _fewshot, "fewshot", pin_paper_columns=False, name_dataset=True)


TABLES: dict[str, Callable[[SetupResults], Table | None]] = {
    "table2": table2, "table3": table3, "table4": table4, "table7": table7, "table8": table8, "table9": table9,
    "table10": table10, "fewshot": fewshot,
}


def build_tables(ctx: SetupResults) -> list[Table]:
    """Every table that has rows in this setup."""
    return [table for build in TABLES.values() if (table := build(ctx)) is not None]
