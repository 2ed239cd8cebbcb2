"""The `cassle` command line: help everywhere, clear errors, and the commands that exist today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cassle.apps.cli import build_parser, main
from cassle.evaluate import EVAL_TASKS

REPO = Path(__file__).resolve().parents[1]


def cassle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cassle", *args], capture_output=True, text=True, cwd=REPO)


def all_command_paths(parser, prefix=()):
    """Every (sub)command path of the parser, e.g. ('eval', 'linear')."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in action.choices.items():
            yield (*prefix, name)
            yield from all_command_paths(sub, (*prefix, name))


def test_python_m_cassle_help_lists_the_commands():
    result = cassle("--help")
    assert result.returncode == 0
    for command in ("pretrain", "eval", "report", "data", "demo", "mlflow"):
        assert command in result.stdout


def test_every_subcommand_has_help(capsys):
    paths = list(all_command_paths(build_parser()))
    assert ("data", "check") in paths and all(("eval", task) in paths for task in EVAL_TASKS)
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        assert "usage: cassle " + " ".join(path) in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "cassle"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("cassle ")


def test_data_check_reports_present_and_missing(tmp_path, capsys):
    (tmp_path / "cifar10").mkdir()
    assert main(["data", "check", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "imagenet100" in out and "missing" in out


def test_data_views_on_a_missing_root_is_one_clear_message(tmp_path):
    result = cassle("data", "views", "--dataset", "cifar10", "--root", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "v.png"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "cifar10" in result.stderr and "data_root" in result.stderr


def test_data_views_draws_the_views_figure(tmp_path):
    figure = tmp_path / "views.png"
    result = cassle("data", "views", "--n", "3", "--size", "48", "--out", str(figure))
    assert result.returncode == 0, result.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert str(figure) in result.stdout


def test_the_command_tree_imports_no_task_module_and_no_torch():
    """Every command's parser, every eval task's options included, is built without a task module or torch (`cassle
    --help` and `cassle launch`'s waiting process stay light)."""
    code = ("import sys; from cassle.apps.cli import build_parser; from cassle.evaluate import EVAL_TASKS; "
            "build_parser(); print(any(f'cassle.evaluate.{task}' in sys.modules for task in EVAL_TASKS), "
            "'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_demo_finds_the_checkouts_workflow():
    """`cassle demo` runs the Snakefile of the checkout it is installed from (a moved module once looked one folder
    too low)."""
    from cassle.apps.demo import _repository

    assert _repository() == Path(__file__).resolve().parents[1]
