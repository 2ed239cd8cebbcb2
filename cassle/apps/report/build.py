"""`build_report`: collect the results, build every table and figure per setup, write them and the index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cassle.apps.report.collect import collect
from cassle.apps.report.figures import Figure, build_figures
from cassle.apps.report.index import caption, readme
from cassle.apps.report.render import csv_rows, to_latex, to_markdown
from cassle.apps.report.select import split_setups
from cassle.apps.report.tables import Table, build_tables
from cassle.core.io import atomic_write_text, write_csv_rows

FORMATS = ("md", "tex", "csv")


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats, validated (at least one of md, tex, csv)."""
    chosen = tuple(dict.fromkeys(f.strip() for f in formats if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValueError(f"table formats {list(formats)} are not valid: choose one or more of {', '.join(FORMATS)} "
                         "(e.g. --format md,csv)")
    return chosen


def write_caption(artefact: Table | Figure, folder: Path) -> None:
    """The artefact's caption as <stem>.rst next to it (for Snakemake's report)."""
    atomic_write_text(folder / f"{artefact.stem}.rst", caption(artefact) + "\n")


def write_table(table: Table, folder: Path, formats: Sequence[str], paper: bool) -> list[Path]:
    """The table in every format, plus its caption (.rst); returns the table files."""
    written = []
    for fmt in formats:
        path = folder / f"{table.stem}.{fmt}"
        if fmt == "csv":
            fields, rows = csv_rows(table, paper)
            write_csv_rows(path, rows, fields)
        else:
            atomic_write_text(path, (to_markdown if fmt == "md" else to_latex)(table, paper))
        written.append(path)
    write_caption(table, folder)
    return written


def build_report(results: Path | str, out: Path | str, *, paper: bool = False, formats: Sequence[str] = FORMATS,
                 figures: bool = True) -> dict[str, list[Path]]:
    """Write out/tables/<table>_<setup>.{md,tex,csv,rst}, out/figures/<fig>_<setup>.{png,pdf,rst} (unless
    `figures` is False) and out/README.md from the results folder; returns the files of every table and figure by
    stem (+ "README"). The tables/ folder (and figures/, when drawn) exist afterwards even when the results fill no
    table (no evaluation finished, or none configured)."""
    formats = check_formats(formats)
    found = collect(results)
    out = Path(out)
    for folder in ("tables", "figures") if figures else ("tables",):
        (out / folder).mkdir(parents=True, exist_ok=True)
    setups = split_setups(found)
    files: dict[str, list[Path]] = {}
    tables: list[Table] = []
    drawn: list[Figure] = []
    for ctx in setups:
        for table in build_tables(ctx):
            files[table.stem] = write_table(table, out / "tables", formats, paper)
            tables.append(table)
        for figure in build_figures(ctx, out / "figures") if figures else []:
            write_caption(figure, out / "figures")
            files[figure.stem] = figure.files
            drawn.append(figure)
    index = out / "README.md"
    atomic_write_text(index, readme(found, setups, tables, drawn, files, out, paper))
    files["README"] = [index]
    return files
