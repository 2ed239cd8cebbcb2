"""A Table as Markdown, LaTeX and CSV. The best value of each column within each block is bold (as the paper);
missing cells are "—" (Markdown), "--" (LaTeX) or empty (CSV), never 0. With `paper=True` each cell also shows
the paper's printed value and our difference to it, "ours (paper, ±diff)"; the CSV gets <col>_paper and
<col>_diff columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cassle.apps.report.tables import Column, Row, Table, latex_escape

MISSING_MD = "—"
MISSING_TEX = "--"
DECIMALS = 2


@dataclass(frozen=True)
class _Style:
    """How a format writes a missing cell, a best value and the paper's part of a cell."""

    missing: str
    bold: Callable[[str], str]
    small: Callable[[str], str]


MARKDOWN = _Style(MISSING_MD, lambda text: f"**{text}**", lambda text: text)
LATEX = _Style(MISSING_TEX, lambda text: rf"\textbf{{{text}}}", lambda text: rf"{{\scriptsize {text}}}")


def _fmt(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def _difference(ours: float, printed: float, decimals: int = DECIMALS) -> float:
    """ours - printed rounded, without a negative zero."""
    return round(ours - printed, decimals) + 0.0


def best_rows(table: Table) -> set[tuple[str, str]]:
    """(row key, column key) of the best displayed value of every column within every block (ties: all)."""
    best = set()
    for _, rows in table.blocks():
        for column in table.columns:
            shown = {row.key: round(cell.mean, DECIMALS) for row in rows
                     if (cell := row.cells.get(column.key)) is not None and cell.n}
            if len(shown) < 2:
                continue
            target = (max if column.higher_is_better else min)(shown.values())
            best.update((key, column.key) for key, value in shown.items() if value == target)
    return best


def _cell_text(table: Table, row: Row, column: Column, paper: bool, style: _Style, is_best: bool) -> str:
    cell = row.cells.get(column.key)
    ours = cell.mean if cell is not None and cell.n else None
    text = style.missing if ours is None else style.bold(_fmt(ours)) if is_best else _fmt(ours)
    printed = table.paper_value(row, column) if paper else None
    if printed is not None:
        extra = _fmt(printed) if ours is None else f"{_fmt(printed)}, {_difference(ours, printed):+.{DECIMALS}f}"
        text += " " + style.small(f"({extra})")
    return text


def _notes(table: Table, paper: bool) -> list[str]:
    notes = []
    if any(cell.n > 1 for row in table.rows for cell in row.cells.values()):
        notes.append("Cells average several seeds; the CSV has their standard deviation and count.")
    if not paper:
        return notes
    shown = {(row.key, column.key) for row in table.rows for column in table.columns
             if table.paper_value(row, column) is not None}
    if shown:
        notes.append(f"In parentheses: the paper's value and ours minus it ({table.paper.source}).")
        notes += [f"Paper value of {row} on {column}: {text}." for (row, column), text in table.paper.notes.items()
                  if (row, column) in shown]
    else:
        notes.append("No paper values: the paper has no run of this setup for these rows.")
    return notes


def to_markdown(table: Table, paper: bool = False) -> str:
    """The table as GitHub Markdown, headed by its caption, setup and scale flag."""
    best = best_rows(table)
    lines = [f"### {table.title}: {table.caption}", "", f"Setup: pretrained on {table.ctx.setup.dataset}, backbone "
             f"{table.ctx.setup.backbone}."]
    if (scale := table.ctx.scale_note()) is not None:
        lines.append(f"**{scale}.**")
    lines += ["", "| Method | " + " | ".join(c.label for c in table.columns) + " |",
              "|---|" + "---:|" * len(table.columns)]
    for block, rows in table.blocks():
        if block:
            lines.append(f"| *{block}* |" + " |" * len(table.columns))
        for row in rows:
            cells = [_cell_text(table, row, c, paper, MARKDOWN, (row.key, c.key) in best) for c in table.columns]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    notes = [f"{MISSING_MD}: no result.", *_notes(table, paper)]
    return "\n".join(lines + ["", *notes]) + "\n"


def to_latex(table: Table, paper: bool = False) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); best per block in \\textbf."""
    best = best_rows(table)
    width = len(table.columns) + 1
    lines = [f"% {table.title} ({table.ctx.setup}): {table.caption}"]
    if (scale := table.ctx.scale_note()) is not None:
        lines.append(f"% {scale}")
    lines += [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
              "Method & " + " & ".join(c.latex or latex_escape(c.label) for c in table.columns) + r" \\",
              r"\midrule"]
    for i, (block, rows) in enumerate(table.blocks()):
        if i:
            lines.append(r"\midrule")
        if block:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(block)}}}}} \\")
        for row in rows:
            cells = [_cell_text(table, row, c, paper, LATEX, (row.key, c.key) in best) for c in table.columns]
            lines.append(f"{row.latex} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def csv_rows(table: Table, paper: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """(fieldnames, rows) of the table: block, row id, method, then per column its mean, std and count (and the
    paper's value and the difference with `paper`); missing values are empty."""
    fields = ["block", "row", "method"]
    for column in table.columns:
        fields += [column.key, f"{column.key}_std", f"{column.key}_n"]
        if paper:
            fields += [f"{column.key}_paper", f"{column.key}_diff"]
    out = []
    for row in table.rows:
        record: dict[str, Any] = {"block": row.block, "row": row.key, "method": row.label}
        for column in table.columns:
            cell = row.cells.get(column.key)
            mean = cell.mean if cell is not None else None
            std = cell.std if cell is not None else None
            record[column.key] = "" if mean is None else round(mean, 4)
            record[f"{column.key}_std"] = "" if std is None else round(std, 4)
            record[f"{column.key}_n"] = cell.n if cell is not None else 0
            if paper:
                printed = table.paper_value(row, column)
                record[f"{column.key}_paper"] = "" if printed is None else printed
                record[f"{column.key}_diff"] = "" if printed is None or mean is None else _difference(mean, printed, 4)
        out.append(record)
    return fields, out
