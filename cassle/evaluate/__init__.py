"""Downstream evaluations of frozen backbones: feature extraction and one module per task.

`EVAL_TASKS` is the one list of tasks: `cassle eval TASK`, the workflow's evaluation rule and the plan's checks all
read it. A task `T` is the module `cassle.evaluate.T` with `run(args) -> int`, and its options are the function
`T(parser)` of `cassle.evaluate.options`. Parsing them imports no task module: the planner and `cassle launch
--check-only` parse options only to reject bad ones, and torch, torchvision and scikit-learn take seconds. The task
module is imported when the parsed command runs, so this package, and the options, import nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
from functools import partial
from types import ModuleType

from cassle.core.registry import Registry
from cassle.evaluate import options

EVAL_TASKS: Registry[str] = Registry("evaluation", [
    ("linear", "linear probe with the penalty sweep (Table 2)"),
    ("rotation", "predict 0/90/180/270 degree rotations with the linear protocol (Table 7)"),
    ("corruption", "linear probe trained clean, tested on weather corruptions (Table 8)"),
    ("sensitivity", "InfoNCE between original and augmented views at every stage (Figs 6, 8-10)"),
    ("conditioning", "projector similarity with the true vs a random omega (Fig 3)"),
    ("retrieval", "cosine nearest neighbours, recall@k and image grids (Fig 5)"),
    ("detection", "Faster R-CNN on the frozen backbone, VOC07 protocol (Table 3)"),
    ("fewshot", "N-way K-shot episodes with logistic regression (AugSelf's few-shot table)"),
])
"""Every evaluation task by name, with its one-line summary."""

CONDITIONING_HISTOGRAM = "histogram.json"
"""File of `cassle eval conditioning`, next to its metrics.json, that `cassle report` draws Fig 3 from."""


def task_module(task: str) -> ModuleType:
    """The module of a registered task (imports it)."""
    EVAL_TASKS[task]  # an unknown task raises UnknownNameError before any import
    return importlib.import_module(f"cassle.evaluate.{task}")


def task_parser(task: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of `cassle eval TASK` added to `parser` (a new one by default), which then runs the task (its
    module is imported only then)."""
    summary = EVAL_TASKS[task]  # an unknown task raises UnknownNameError
    parser = parser or argparse.ArgumentParser(prog=f"cassle eval {task}", description=summary)
    getattr(options, task)(parser)
    parser.set_defaults(run=partial(_run_task, task))
    return parser


def reference_table() -> str:
    """The Markdown table of every evaluation task (docs/evaluation.md embeds it; a test keeps them equal)."""
    lines = ["| task | what it measures | module |", "|---|---|---|"]
    lines += [f"| `{task}` | {summary} | `cassle/evaluate/{task}.py` |" for task, summary in EVAL_TASKS.items()]
    return "\n".join(lines)


def _run_task(task: str, args: argparse.Namespace) -> int:
    """Import the task's module, set torch's threads from the job's CPUs (--threads), then run the task."""
    from cassle.evaluate.command import set_threads  # torch

    module = task_module(task)
    set_threads(args)
    return module.run(args)
