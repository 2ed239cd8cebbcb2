"""The architecture holds: imports run downward (import-linter contracts), the drawn import graph is the code's, and
adding a framework is one module + one registry line (a throw-away framework is validated, planned, trained,
evaluated and reported)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from torch import Tensor
from torch.nn import functional as F

from cassle.apps.cli import main
from cassle.apps.plan import plan_workflow
from cassle.apps.report.build import build_report
from cassle.config import ConfigError, resolve
from cassle.methods import FRAMEWORKS, VARIANTS, Framework, Method, SSLOutput
from cassle.nets import HeadSpecs, MLPSpec

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts (pyproject.toml of `root`) checked against the package `cassle` under `root`."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=False)


def test_imports_run_downward():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: 3 kept, 0 broken", done.stdout), done.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("core/errors.py", "import cassle.apps.cli", "Three tiers"),                   # foundation -> applications
    ("nets/heads.py", "from cassle.methods import FRAMEWORKS", "Three tiers"),     # domain, one layer up
    ("apps/engine/trainer.py", "import cassle.apps.tracking", "Applications"),     # two applications
    ("losses.py", "import mlflow", "runs without the workflow tools"),             # the library and MLflow
])
def test_an_upward_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str):
    """On a copy of the package with one forbidden import added, the contracts fail and name the broken one."""
    shutil.copytree(REPO / "cassle", tmp_path / "cassle", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "cassle" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"{re.escape(contract)}.*BROKEN", done.stdout, re.S), done.stdout


def test_architecture_doc_shows_the_import_graph_of_the_code():
    generated = subprocess.run([sys.executable, str(REPO / "tools" / "import_graph.py")], capture_output=True,
                               text=True, check=True).stdout.strip()
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = re.search(r"```mermaid\n(.*?)\n```", doc, re.S)
    assert drawn and drawn[1].strip() == generated, "docs/architecture.md is stale: run python tools/import_graph.py"
    assert "apps_engine --> config" in generated and "core -->" not in generated  # downward, core imports nothing


# --------------------------------------------------------------------------------------------- a new framework

class ThrowAway(Method):
    """A framework as a user would add it: one module with its loss (here the alignment of the two views'
    normalised projections, which is all this test needs)."""

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        features = [self.embed(view) for view in views[:2]]
        first, second = (F.normalize(self.project(y, omega), dim=1) for y, omega in zip(features, omegas))
        return SSLOutput((first - second).pow(2).sum(dim=1).mean(), tuple(features))


def test_a_new_framework_is_one_module_and_one_registry_line(tmp_path: Path):
    settings = {"dataset": "synthetic", "max_steps": 2, "conditioning.encoder_depth": 1,
                "conditioning.encoder_width": 8, "num_workers": 0, "checkpoint_every": 2}
    with pytest.raises(ConfigError, match="'framework' = 'throwaway'"):
        resolve({**settings, "framework": "throwaway"})
    FRAMEWORKS.register("throwaway", Framework(  # the one registry line, for this test only
        "throwaway", "Throw-Away", f"{__name__}:ThrowAway", HeadSpecs(MLPSpec(2, 32, 16)),
        dict(backbone="resnet_narrow", epochs=1, batch_size=16, optimizer="sgd", base_lr=0.05, weight_decay=1e-4,
             warmup_epochs=0.0)))
    try:
        assert resolve({**settings, "framework": "throwaway"})["batch_size"] == 16  # validated, with its defaults
        run_the_workflow_steps(settings, tmp_path)
    finally:
        FRAMEWORKS.unregister("throwaway")


def run_the_workflow_steps(settings: dict, tmp_path: Path) -> None:
    """Plan, train, evaluate and report a grid of the new framework, through the commands the workflow runs."""
    workflow = {
        "pretrain": {"defaults": settings, "groups": {"new": {"grid": {"framework": ["throwaway"],
                                                                        "variant": list(VARIANTS)}}}},
        "evaluations": {"linear": {"groups": ["new"], "datasets": ["synthetic"],
                                   "options": {"max_images": 48, "workers": 0}}},
    }
    plan = plan_workflow(workflow)                                                    # planned
    assert plan.job_counts() == {"pretrain": 3, "evaluate": 3, "report": 1}
    results = tmp_path / "results"
    for name, run in plan.runs.items():                                               # trained, as the workflow does
        assert main(["pretrain", *run.pretrain_args(), "--out", str(results / "pretrain" / name), "--quiet"]) == 0
    for evaluation in plan.evaluations["linear"]:
        assert main(["eval", *evaluation.eval_args(results), *evaluation.runtime, "--quiet"]) == 0

    build_report(results, tmp_path / "reports", figures=False)                        # reported, with its label
    table = next((tmp_path / "reports" / "tables").glob("table2_*.csv")).read_text(encoding="utf-8")
    rows = [line.split(",")[:3] for line in table.splitlines()[1:]]
    assert rows == [["Throw-Away", f"throwaway/{variant}", label] for variant, label in VARIANTS.items()]
