"""`cassle demo` / `make demo`: the whole workflow on the embedded `synthetic` dataset (no download).

It runs the Snakemake DAG of config/demo.yaml (profiles/demo: 2 cores, jobs in-process): every framework x variant
pretrained for a few steps, every evaluation that runs on synthetic data, the tables and figures, the MLflow store,
then the self-contained Snakemake report, and prints where everything is.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cassle.apps.report.views import draw_views_figure
from cassle.apps.tracking.command import ui_address, ui_command
from cassle.apps.tracking.store import init_store
from cassle.core.errors import CassleError

REPOSITORY = Path(__file__).resolve().parents[2]  # cassle/apps/demo.py -> the checkout


def _repository() -> Path:
    if not (REPOSITORY / "Snakefile").is_file():
        raise FileNotFoundError(f"the demo runs the workflow of a cassle checkout, but {REPOSITORY} has no Snakefile: "
                                "clone the repository and install it with `make venv` (an editable install)")
    return REPOSITORY


def _snakemake(workdir: Path, logs: Path, *args: str) -> None:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(_repository() / "Snakefile"),
               "--directory", str(workdir), *args]
    result = subprocess.run(command, cwd=workdir)
    if result.returncode != 0:
        raise CassleError(f"the demo workflow failed (exit {result.returncode}); the job logs are under "
                          f"{logs}/. Command: {shlex.join(command)}")


def run_demo(workdir: Path, cores: int = 2) -> int:
    """Run the demo DAG in `workdir` (results land in `workdir/results/demo`), then its report; print the paths."""
    workdir = workdir.resolve()
    config_file = _repository() / "config" / "demo.yaml"
    config = yaml.safe_load(config_file.read_text())
    results, reports = workdir / config["results"], workdir / config["reports"]
    start = time.perf_counter()
    _snakemake(workdir, results / "logs", "--profile", str(_repository() / "profiles" / "demo"),
               "--configfile", str(config_file), "--cores", str(cores))
    html = reports / "report.html"
    _snakemake(workdir, results / "logs", "--configfile", str(config_file), "--report", str(html))
    views = draw_views_figure("synthetic", results / "views.png", n_images=6, size=64, seed=0)
    uri = f"sqlite:///{results / 'mlflow.db'}"
    minutes = (time.perf_counter() - start) / 60
    print(f"\ncassle demo finished in {minutes:.1f} min:\n"
          f"  runs and evaluations  {results}/pretrain, {results}/eval\n"
          f"  tables                {reports}/tables (Markdown, LaTeX, CSV)\n"
          f"  figures               {reports}/figures\n"
          f"  index with provenance {reports}/README.md\n"
          f"  Snakemake report      {html}\n"
          f"  views and omega       {views}\n"
          f"  MLflow store          {uri}\n"
          f"      serve it with     {ui_command(uri)}\n"
          f"      and browse        {ui_address(uri, init_store(uri, config['mlflow']['experiment']))}")
    return 0
