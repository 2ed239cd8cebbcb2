"""`cassle report`: average ranks, the paper's values, tables and figures from a fixture results tree.

The fixture tree (tests/fixtures/report/results, written by make_fixture.py there) holds hand-made metrics.json
files in the real formats, with missing cells, two seeds of one method, one failed job and one result without its
metric. The Markdown tables built from it are compared with tests/fixtures/report/golden/*.md; after an intended
change, regenerate them with `CASSLE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report.py` and review
the diff.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cassle.apps.cli import main
from cassle.apps.report import average_rank
from cassle.apps.report.collect import collect
from cassle.apps.report.paper import paper_tables
from cassle.apps.report.select import split_setups
from cassle.apps.report.tables import build_tables

FIXTURE = Path(__file__).parent / "fixtures" / "report"
RESULTS = FIXTURE / "results"
GOLDEN = FIXTURE / "golden"
PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "cassle-paper.txt"
REFERENCE_TEXT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "original-implementation.md"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
MAIN = "imagenet100_resnet50"
DEMO = "synthetic_resnet_narrow"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`cassle report --paper` run end to end on the fixture tree (once for the module): (out folder, stdout)."""
    out = tmp_path_factory.mktemp("reports")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", "--results", str(RESULTS), "--out", str(out), "--paper"]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def report(built: tuple[Path, str]) -> Path:
    return built[0]


def _csv(report: Path, stem: str) -> dict[str, dict[str, str]]:
    with open(report / "tables" / f"{stem}.csv", encoding="utf-8", newline="") as handle:
        return {row["row"]: row for row in csv.DictReader(handle)}


def _md_row(report: Path, stem: str, block: str, label: str) -> list[str]:
    """Cells of the Markdown row `label` inside block `block` (its first column dropped)."""
    lines = (report / "tables" / f"{stem}.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| *{block}*"))
    row = next(line for line in lines[start + 1:] if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")][1:]


# --- average rank ---------------------------------------------------------------------------------------------------

def _table4_block(prefix: str) -> tuple[pd.DataFrame, pd.Series]:
    """A block of the paper's Table 4 as printed: accuracies and the printed Avg. rank."""
    table = paper_tables()["table4"]
    rows = [row for row in table.rows() if row.startswith(prefix + "/")]
    tasks = [column for column in table.columns if column != "avg_rank"]
    frame = pd.DataFrame([[table.values[(row, task)] for task in tasks] for row in rows], index=rows, columns=tasks)
    return frame, pd.Series([table.values[(row, "avg_rank")] for row in rows], index=rows)


def _matches_printed(ours: float, printed: float) -> bool:
    """The paper prints two decimals, mostly truncated (2.846 -> 2.84) but sometimes rounded (4.538 -> 4.54)."""
    return printed in (math.floor(ours * 100 + 1e-9) / 100, round(ours, 2))


@pytest.mark.parametrize("block", ["omega", "color_diff", "injection", "depth"])
def test_average_rank_reproduces_the_papers_table4(block: str) -> None:
    frame, printed = _table4_block(block)
    ours = average_rank(frame)
    assert list(ours.index) == list(frame.index)
    for row in frame.index:
        assert _matches_printed(ours[row], printed[row]), (row, ours[row], printed[row])


def test_table4_ties_are_min_ranks() -> None:
    """Block 1 has a tie (MIT: 63.51 twice); only min ranks ("1224") give the printed column."""
    frame, printed = _table4_block("omega")
    for method in ("average", "dense", "max"):
        ours = average_rank(frame, method=method)
        assert not all(_matches_printed(ours[row], printed[row]) for row in frame.index), method


def test_average_rank_by_hand() -> None:
    frame = pd.DataFrame({"acc": [90.0, 80.0, 90.0, math.nan], "err": [3.0, 1.0, 2.0, 5.0]},
                         index=["a", "b", "c", "d"])
    ours = average_rank(frame, {"acc": True, "err": False})
    # acc (higher better, d missing): a=1, c=1 (tie -> min rank), b=3; err (lower better): b=1, c=2, a=3, d=4
    assert ours.to_dict() == pytest.approx({"a": 2.0, "b": 2.0, "c": 1.5, "d": 4.0})
    assert math.isnan(average_rank(pd.DataFrame({"x": [1.0, math.nan]}, index=["p", "q"]))["q"])


def test_average_rank_rejects_bad_input() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [2.0, 1.0]})
    with pytest.raises(ValueError, match="no direction for columns \\['y'\\]"):
        average_rank(frame, {"x": True})
    with pytest.raises(ValueError, match="not a tie rule"):
        average_rank(frame, method="mean")
    with pytest.raises(ValueError, match="numeric"):
        average_rank(frame.assign(z=["a", "b"]))


# --- the paper's values ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason=f"the paper's text is not at {PAPER_TEXT}")
def test_paper_values_are_the_printed_numbers() -> None:
    """Every transcribed row appears, value after value, in the paper's text (few-shot: in the reference notes)."""
    paper = PAPER_TEXT.read_text(encoding="utf-8")
    reference = REFERENCE_TEXT.read_text(encoding="utf-8") if REFERENCE_TEXT.is_file() else None
    checked = 0
    for name, table in paper_tables().items():
        for row in table.rows():
            values = [table.values[(row, column)] for column in table.columns if (row, column) in table.values]
            if name == "fewshot":
                if reference is not None:
                    pairs = [f"{a:.2f}/{b:.2f}" for a, b in zip(values[::2], values[1::2])]
                    assert all(pair in reference for pair in pairs), (row, pairs)
                continue
            assert " ".join(f"{value:.2f}" for value in values) in paper, (name, row)
            checked += 1
    assert checked >= 50


# --- tables from the fixture tree -----------------------------------------------------------------------------------

def test_cli_prints_where_everything_went(built: tuple[Path, str]) -> None:
    out, printed = built
    assert f"table2_{MAIN}: {out / 'tables' / f'table2_{MAIN}'}.{{md,tex,csv}}" in printed
    assert f"fig6_{MAIN}: {out / 'figures' / f'fig6_{MAIN}'}.{{png,pdf}}" in printed
    assert f"README: {out / 'README.md'}" in printed


def test_cli_format_and_no_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--results", str(RESULTS), "--out", str(tmp_path), "--format", "csv", "--no-figures"]) == 0
    assert f"table2_{MAIN}: {tmp_path / 'tables' / f'table2_{MAIN}.csv'}" in capsys.readouterr().out
    assert not list((tmp_path / "tables").glob("*.md")) and not (tmp_path / "figures").exists()


def test_golden_markdown(report: Path) -> None:
    built = {path.name: path.read_text(encoding="utf-8") for path in (report / "tables").glob("*.md")}
    if os.environ.get("CASSLE_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        GOLDEN.mkdir(parents=True)
        for name, text in built.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    golden = {path.name: path.read_text(encoding="utf-8") for path in GOLDEN.glob("*.md")}
    assert sorted(built) == sorted(golden)
    for name, text in golden.items():
        assert built[name] == text, f"{name} differs from its golden file (CASSLE_UPDATE_GOLDEN=1 to regenerate)"


def test_every_table_of_the_paper_setup_is_built(report: Path) -> None:
    names = {path.stem for path in (report / "tables").glob("*.md")}
    paper_names = {"table2", "table3", "table4", "table7", "table8", "table9", "table10", "fewshot"}
    assert names == {f"{name}_{MAIN}" for name in paper_names} | {f"table2_{DEMO}"}
    for stem in names:
        for suffix in (".tex", ".csv", ".rst"):
            assert (report / "tables" / f"{stem}{suffix}").is_file()


def test_rows_come_from_the_configs(report: Path) -> None:
    """Ablation runs and MoCo-v1 stay out of Table 2; each ablation lands in its block of Table 4."""
    assert list(_csv(report, f"table2_{MAIN}")) == ["simclr/vanilla", "simclr/cassle", "mocov2/vanilla",
                                                      "mocov2/augself", "mocov2/cassle"]
    assert list(_csv(report, f"table4_{MAIN}")) == [
        "omega/c", "omega/c,j", "omega/c,j,d", "omega/c,j,b,f,g,d",
        "color_diff/cassle:c,j", "color_diff/augself:c,j", "color_diff/cassle:c,j,d", "color_diff/augself:c,j,d",
        "injection/cat", "injection/add", "depth/2", "depth/6", "width/16", "width/64"]
    assert list(_csv(report, f"table10_{MAIN}")) == ["mocov1/vanilla", "mocov1/cassle"]
    assert list(_csv(report, f"table9_{MAIN}")) == ["mocov2/vanilla", "mocov2/cassle", "external/spark"]


def test_seeds_are_averaged(report: Path) -> None:
    row = _csv(report, f"table2_{MAIN}")["mocov2/cassle"]
    seeds = [86.20, 86.44]                                     # cifar10 top1 of the two seeds in the fixture
    assert float(row["cifar10"]) == pytest.approx(statistics.mean(seeds))
    assert float(row["cifar10_std"]) == pytest.approx(statistics.stdev(seeds), abs=1e-4)
    assert row["cifar10_n"] == "2"
    assert float(row["cifar10_paper"]) == 86.32
    assert float(row["cifar10_diff"]) == pytest.approx(statistics.mean(seeds) - 86.32, abs=1e-4)


def test_missing_cells_are_shown_as_missing(report: Path) -> None:
    """The failed job (SimCLR CASSLE on cifar10), the result without its metric (SimCLR vanilla on flowers) and the
    never-run datasets are missing, never 0."""
    table = _csv(report, f"table2_{MAIN}")
    assert table["simclr/cassle"]["cifar10"] == "" and table["simclr/cassle"]["cifar10_n"] == "0"
    assert table["simclr/vanilla"]["flowers"] == ""
    assert table["mocov2/vanilla"]["food101"] == ""
    columns = ["cifar10", "cifar100", "food101", "mit67", "pets", "flowers"]
    cells = _md_row(report, f"table2_{MAIN}", "SimCLR", "CASSLE")
    assert cells[0] == "— (86.31)" and cells[5].startswith("85.22")
    assert _md_row(report, f"table2_{MAIN}", "SimCLR", "Vanilla")[columns.index("flowers")] == "— (83.37)"
    tex = (report / "tables" / f"table2_{MAIN}.tex").read_text(encoding="utf-8")
    simclr_cassle = next(line for line in tex.splitlines() if line.startswith("CASSLE") and "85.22" in line)
    assert simclr_cassle.split(" & ")[1].startswith("--")
    assert " 0.00" not in (report / "tables" / f"table2_{MAIN}.md").read_text(encoding="utf-8")


def test_latex_bolds_the_best_of_each_block(report: Path) -> None:
    """Recompute the best of every column within every block from the CSV, and check the LaTeX bolds exactly it."""
    stem = f"table2_{MAIN}"
    rows = _csv(report, stem)
    tex_rows = [line for line in (report / "tables" / f"{stem}.tex").read_text(encoding="utf-8").splitlines()
                if line.startswith(("Vanilla", "AugSelf", "CASSLE"))]
    assert len(tex_rows) == len(rows)
    keys = list(rows)
    columns = ["cifar10", "cifar100", "food101", "mit67", "pets", "flowers", "caltech101", "cars", "aircraft", "dtd",
               "sun397", "cub200", "300w"]
    bolded = 0
    for i, key in enumerate(keys):
        block = [k for k in keys if rows[k]["block"] == rows[key]["block"]]
        cells = tex_rows[i].removesuffix(r" \\").split(" & ")[1:]
        for j, column in enumerate(columns):
            values = {k: round(float(rows[k][column]), 2) for k in block if rows[k][column]}
            best = len(values) > 1 and values.get(key) == max(values.values())
            assert cells[j].startswith(r"\textbf{") == best, (key, column, cells[j])
            bolded += best
    assert bolded == 4           # SimCLR: 300W only (one value elsewhere); MoCo-v2: C10, Flowers, 300W


def test_table9_compares_every_row(report: Path) -> None:
    """Table 9 is one block, as the paper's: the external checkpoint competes with MoCo-v2 for the bold (SparK's
    300W is the best), and the dagger of the paper's MoCo-v2 300W value is noted."""
    text = (report / "tables" / f"table9_{MAIN}.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].removeprefix("| "): line.strip("|").split("|")[1:] for line in text.splitlines()
            if line.startswith(("| MoCo-v2", "| spark"))}
    assert list(rows) == ["MoCo-v2", "MoCo-v2 + CASSLE", "spark"]
    assert rows["spark"][-1].strip().startswith("**96.13**")
    assert not rows["MoCo-v2 + CASSLE"][-1].strip().startswith("**")
    assert rows["MoCo-v2 + CASSLE"][0].strip().startswith("**86.32**")
    assert "Paper value of mocov2/vanilla on 300w: dagger" in text
    assert {row["block"] for row in _csv(report, f"table9_{MAIN}").values()} == {""}


def test_average_rank_column_of_the_ablations(report: Path) -> None:
    """Table 4's Avg. rank equals average_rank of the block's means (checked on the injection block by hand:
    cifar10 86.32 < 86.45, flowers 86.51 < 86.91, 300w 88.93 > 88.87 -> cat 5/3, add 4/3)."""
    rows = _csv(report, f"table4_{MAIN}")
    assert float(rows["injection/cat"]["avg_rank"]) == pytest.approx(5 / 3, abs=1e-4)
    assert float(rows["injection/add"]["avg_rank"]) == pytest.approx(4 / 3, abs=1e-4)
    assert float(rows["injection/add"]["avg_rank_paper"]) == 1.92
    assert _md_row(report, f"table4_{MAIN}", "Method of conditioning the projector", "Addition")[-1] == \
        "**1.33** (1.92, -0.59)"


def test_paper_values_only_for_the_papers_setup(report: Path) -> None:
    demo = (report / "tables" / f"table2_{DEMO}.md").read_text(encoding="utf-8")
    assert "(" not in demo.split("| Method |")[1].split("\n\n")[0]
    assert "No paper values" in demo
    assert "demo-scale: not comparable to the paper" in demo
    assert "demo-scale" not in (report / "tables" / f"table2_{MAIN}.md").read_text(encoding="utf-8")


def test_without_paper_flag_no_paper_columns(tmp_path: Path) -> None:
    from cassle.apps.report.render import csv_rows, to_markdown

    ctx = next(ctx for ctx in split_setups(collect(RESULTS)) if ctx.setup.name == MAIN)
    table = next(table for table in build_tables(ctx) if table.name == "table3")
    markdown = to_markdown(table)
    assert "45.90" in markdown and "(45.90" not in markdown and "—" in markdown
    fields, _ = csv_rows(table)
    assert not any(field.endswith(("_paper", "_diff")) for field in fields)


def test_readme_indexes_everything_with_provenance(report: Path) -> None:
    readme = (report / "README.md").read_text(encoding="utf-8")
    main_part, demo_part = readme.split(f"## Setup {DEMO.replace('_resnet', '/resnet', 1)}")
    assert "Full scale: comparable to the paper." in main_part
    assert "**demo-scale: not comparable to the paper" in demo_part
    assert "eval/linear/simclr-cassle-a0000006/cifar10 | no metrics.json" in main_part
    assert "eval/linear/simclr-vanilla-a0000005/flowers | metrics.json lacks the linear score (its metrics: penalty)" \
        in main_part
    for stem in (f"table4_{MAIN}", f"fig8_{MAIN}", f"table2_{DEMO}"):
        assert f"({'tables' if stem.startswith('table') else 'figures'}/{stem}." in readme
    assert "mocov2-cassle-d0000001 | mocov2 | cassle | 0 | 3.125 / 500 | dbaf8f615c9b | feedfacecafe | 0123456789 |" \
        in demo_part
    assert "0123456789" in readme                               # the commit of the fixture's provenance


def test_captions_name_config_and_commit(report: Path) -> None:
    text = (report / "tables" / f"table10_{MAIN}.rst").read_text(encoding="utf-8")
    assert text.startswith("Table 10 (imagenet100/resnet50): Linear evaluation of MoCo-v1")
    assert "mocov1-cassle-c0000002" in text and "commits: 0123456789" in text and "f621274d236f" in text
    assert "Demo-scale" in (report / "figures" / f"fig7_{DEMO}.rst").read_text(encoding="utf-8")


def test_figures_are_drawn(report: Path) -> None:
    """Every figure is drawn, no wider than a paper's text width (plus the tight bounding box's padding)."""
    import matplotlib.image

    from cassle.apps.report.figures import DPI, PAGE_WIDTH

    for name in ("fig3", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10"):
        png = report / "figures" / f"{name}_{MAIN}.png"
        height, width = matplotlib.image.imread(png).shape[:2]
        assert 300 < width <= (PAGE_WIDTH + 0.3) * DPI and height > 200, (name, width, height)
        assert (report / "figures" / f"{name}_{MAIN}.pdf").read_bytes().startswith(b"%PDF")
        assert (report / "figures" / f"{name}_{MAIN}.rst").is_file()
    assert sorted(p.name for p in (report / "figures").glob(f"*_{DEMO}.png")) == [f"fig7_{DEMO}.png"]


def test_mean_sensitivity_averages_seeds() -> None:
    from cassle.apps.report.figures import mean_sensitivity

    ctx = next(ctx for ctx in split_setups(collect(RESULTS)) if ctx.setup.name == MAIN)
    results = ctx.evals_of(ctx.runs_where("mocov2", "cassle"), "sensitivity")
    assert len(results) == 2
    pooled = [r.metrics["infonce/crop/pooled"] for r in results]
    assert mean_sensitivity(results)["crop"]["pooled"] == pytest.approx(sum(pooled) / 2)


# --- placement and scale from configs -------------------------------------------------------------------------------

def _write_run(root: Path, folder: str, config: dict, epochs: float) -> Path:
    path = root / "pretrain" / folder
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"config": config, "epochs": epochs, "provenance": {}}))
    return path


def _write_eval(folder: Path, task: str, dataset: str, metrics: dict, kind: str, source: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "task": task, "dataset": dataset, "metrics": metrics, "options": {"metric": "top1"},
        "source": {"kind": kind, "path": str(source), "arch": "resnet50"}}))


def _write_linear(root: Path, run: Path, dataset: str, top1: float) -> None:
    _write_eval(root / "eval" / "linear" / run.name / dataset, "linear", dataset, {"top1": top1}, "run", run)


def test_folder_names_do_not_decide_the_row(tmp_path: Path) -> None:
    config = {"framework": "mocov2", "variant": "cassle", "dataset": "imagenet100", "backbone": "resnet50",
              "epochs": 500}
    run = _write_run(tmp_path, "simclr-vanilla-00000000", config, epochs=500)
    _write_linear(tmp_path, run, "cifar10", 0.5)
    (ctx,) = split_setups(collect(tmp_path))
    assert ctx.scale_note() is None
    (table,) = [table for table in build_tables(ctx) if table.name == "table2"]
    assert [row.key for row in table.rows] == ["mocov2/cassle"]
    assert table.rows[0].cells["cifar10"].values == [50.0]


def test_short_runs_are_flagged_demo_scale(tmp_path: Path) -> None:
    config = {"framework": "mocov2", "variant": "vanilla", "dataset": "imagenet100", "backbone": "resnet50",
              "epochs": 500}
    _write_run(tmp_path, "mocov2-vanilla-00000001", config, epochs=100)
    (ctx,) = split_setups(collect(tmp_path))
    assert "fewer epochs" in ctx.scale_note()


def test_no_table_without_columns(tmp_path: Path) -> None:
    """Outside the paper's setup a table has only the columns of its results: none, no table (not an empty one)."""
    config = {"framework": "mocov2", "variant": "cassle", "dataset": "synthetic", "backbone": "resnet_narrow",
              "epochs": 1}
    _write_run(tmp_path, "mocov2-cassle-00000000", config, epochs=1)
    (ctx,) = split_setups(collect(tmp_path))
    assert build_tables(ctx) == []


def test_paper_notes_must_name_a_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    from cassle.apps.report import paper

    data = json.loads(json.dumps(paper._data()))
    data["tables"]["table8"]["notes"] = {"mocov2/cassle/imagenet100/fog": "a note"}
    monkeypatch.setattr(paper, "_data", lambda: data)
    paper.paper_tables.cache_clear()
    try:
        assert paper.paper_tables()["table8"].notes == {("mocov2/cassle", "imagenet100/fog"): "a note"}
        data["tables"]["table8"]["notes"] = {"mocov2/cassle/fog": "a note"}
        paper.paper_tables.cache_clear()
        with pytest.raises(ValueError, match="not a <row>/<column>"):
            paper.paper_tables()
    finally:
        monkeypatch.undo()
        paper.paper_tables.cache_clear()


def test_bad_inputs_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither pretrain/ nor eval/"):
        collect(tmp_path)
    assert main(["report", "--results", str(RESULTS), "--out", str(tmp_path), "--format", "md,html"]) == 1


def _paper_grid(results: Path) -> None:
    """Fake results of the workflow's paper grid (config/config.yaml): every linear eval scores the value the
    paper prints for the row the workflow's groups meant it for."""
    import yaml

    from cassle.apps.plan import plan_workflow
    from cassle.apps.report.tables import OMEGA_LETTERS

    plan = plan_workflow(yaml.safe_load(CONFIG.read_text(encoding="utf-8")), check_options=False)
    tables = paper_tables()
    letters = lambda keys: ",".join(letter for key, letter in OMEGA_LETTERS.items() if key in keys)  # noqa: E731
    for name, run in plan.runs.items():
        _write_run(results, name, run.config, epochs=run.config["epochs"])
    for evaluation in plan.evaluations["linear"]:
        if evaluation.external:
            table, row, kind = "table9", "external/" + evaluation.source.removeprefix("external-"), "state_dict"
        else:
            run = plan.runs[evaluation.source]
            config, groups, kind = run.config, set(run.groups), "run"
            table, row = ("table10" if config["framework"] == "mocov1" else "table2",
                          f"{config['framework']}/{config['variant']}")
            if "omega_ablation" in groups:
                table, row = "table4", f"omega/{letters(config['conditioning.omega_keys'])}"
            elif "injection_ablation" in groups:
                table, row = "table4", f"injection/{config['conditioning.injection']}"
            elif "depth_ablation" in groups:
                table, row = "table4", f"depth/{config['conditioning.encoder_depth']}"
            elif "width_ablation" in groups:
                table, row = "table4", f"width/{config['conditioning.encoder_width']}"
            elif "augself_ablation" in groups:
                table, row = "table4", f"color_diff/augself:{letters(config['augself.weights'])}"
        value = tables[table].values.get((row, evaluation.dataset))
        if value is not None:
            source = results / "pretrain" / evaluation.source if kind == "run" else evaluation.external
            _write_eval(evaluation.out(results), "linear", evaluation.dataset, {"top1": value / 100}, kind, source)


@pytest.mark.skipif(not CONFIG.is_file(), reason=f"no workflow config at {CONFIG}")
def test_the_papers_grid_lands_in_the_papers_rows(tmp_path: Path) -> None:
    """Each run of the workflow's grid, placed by its config alone, meets the paper's value of its row: every
    difference is 0, except Table 4's default-CASSLE rows, which the paper reports with other numbers than
    Table 2's MoCo-v2 + CASSLE row (the same configuration)."""
    from cassle.apps.report.render import csv_rows

    _paper_grid(tmp_path)
    built = {table.stem: table for ctx in split_setups(collect(tmp_path)) for table in build_tables(ctx)}
    assert set(built) == {f"table2_{MAIN}", f"table4_{MAIN}", f"table9_{MAIN}", f"table10_{MAIN}",
                          "table2_imagenet1k_vit_small"}
    default_cassle = {"omega/c,j,b,f,g,d", "color_diff/cassle:c,j,b,f,g,d", "injection/cat", "depth/6", "width/64"}
    compared = 0
    for stem, table in built.items():
        rows = {row["row"]: row for row in csv_rows(table, paper=True)[1]}
        assert list(rows) == [row for row, setup in table.paper.setups.items() if setup == table.ctx.setup.key]
        for key, row in rows.items():
            for field, diff in row.items():
                if field.endswith("_diff") and diff != "" and field != "avg_rank_diff" and key not in default_cassle:
                    assert diff == 0, (stem, key, field)
                    compared += 1
    assert compared > 400


# --- real outputs and the CLI's import cost -------------------------------------------------------------------------

EVAL_OPTIONS = {
    "linear": ["--max-images", "96"], "rotation": ["--max-images", "64"],
    "corruption": ["--max-images", "64", "--severities", "1", "3"], "sensitivity": ["--max-images", "64"],
    "conditioning": ["--max-images", "64"], "retrieval": ["--max-images", "64"],
    "fewshot": ["--max-images", "128", "--tasks", "20"],
}


@pytest.fixture(scope="module")
def real_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `cassle pretrain` run (MoCo-v2 CASSLE, a few steps on synthetic) and every `cassle eval` that runs on
    synthetic data, in the results layout the workflow writes."""
    results = tmp_path_factory.mktemp("real") / "results"
    run = results / "pretrain" / "mocov2-cassle-00000000"
    settings = ["framework=mocov2", "variant=cassle", "dataset=synthetic", "backbone=resnet_narrow", "max_steps=6",
                "batch_size=16", "queue_size=64", "num_workers=0", "device=cpu", "log_every=1"]
    assert main(["pretrain", *[arg for s in settings for arg in ("--set", s)], "--out", str(run), "--quiet"]) == 0
    for task, options in EVAL_OPTIONS.items():
        out = results / "eval" / task / run.name / "synthetic"
        argv = ["eval", task, str(run), "--dataset", "synthetic", "--workers", "0", "--device", "cpu", *options]
        assert main([*argv, "--out", str(out)]) == 0, task
    return results


def test_real_outputs_go_through(real_results: Path, tmp_path: Path) -> None:
    """The metrics.json files of real runs, not fixtures written for the report, build every table and figure that
    their tasks feed, with the numbers they hold."""
    from cassle.apps.report.build import build_report

    files = build_report(real_results, tmp_path / "reports", paper=True)
    stems = set(files)
    assert {f"table2_{DEMO}", f"table7_{DEMO}", f"table8_{DEMO}", f"fewshot_{DEMO}"} <= stems
    assert {f"fig3_{DEMO}", f"fig5_{DEMO}", f"fig6_{DEMO}", f"fig7_{DEMO}"} <= stems
    corruption = _csv(tmp_path / "reports", f"table8_{DEMO}")["mocov2/cassle"]
    written = json.loads(next((real_results / "eval" / "corruption").glob("*/synthetic/metrics.json")).read_text())
    assert float(corruption["synthetic/fog"]) == pytest.approx(100 * written["metrics"]["fog"], abs=1e-4)
    assert "demo-scale" in (tmp_path / "reports" / "README.md").read_text(encoding="utf-8")
    # Fig 3 is drawn as the paper's histograms from the conditioning eval's histogram.json, not as the means alone
    assert "solid lines" in (tmp_path / "reports" / "figures" / f"fig3_{DEMO}.rst").read_text(encoding="utf-8")


def test_the_cli_module_imports_nothing_heavy() -> None:
    code = ("import sys, cassle.apps.report, cassle.apps.report.command; "
            "heavy = [m for m in ('pandas', 'matplotlib', 'torch', 'yaml') if m in sys.modules]; "
            "assert not heavy, heavy; from cassle.apps.report import average_rank; print(average_rank.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "average_rank", done.stderr


def test_an_eval_written_one_level_too_high_is_reported(tmp_path: Path) -> None:
    """`--out eval/<task>/<run>` without the <dataset> level: listed as a failure that says where to move it."""
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    stray = results / "eval" / "sensitivity" / "tiny"
    stray.mkdir(parents=True)
    (stray / "metrics.json").write_text('{"task": "sensitivity", "metrics": {}, "source": {}}', encoding="utf-8")
    failure = next(f for f in collect(results).failures if f.path == stray)
    assert "one level too high" in failure.reason and f"{stray}/<dataset>/" in failure.reason


@pytest.mark.parametrize("table,row,run", [
    ("table2", "mocov2/vanilla", "mocov2-vanilla-a0000001"), ("table4", "omega/c", "mocov2-cassle-b0000001"),
    ("table9", "external/spark", "external-spark"), ("table10", "mocov1/cassle", "mocov1-cassle-c0000002")])
def test_300w_columns_hold_the_papers_r2(report: Path, table: str, row: str, run: str) -> None:
    """The paper's 300W figure is the authors' pooled squared correlation: every table with a 300W column shows
    `r2_authors` (the fixture's scikit-learn `r2` is 50 points lower), and --paper compares the paper with it."""
    metrics = json.loads((RESULTS / "eval" / "linear" / run / "300w" / "metrics.json").read_text())["metrics"]
    cells = _csv(report, f"{table}_{MAIN}")[row]
    assert float(cells["300w"]) == pytest.approx(100 * metrics["r2_authors"])
    assert float(cells["300w"]) != pytest.approx(100 * metrics["r2"], abs=1)
    if cells["300w_paper"]:
        assert float(cells["300w_diff"]) == pytest.approx(float(cells["300w"]) - float(cells["300w_paper"]), abs=0.01)
