"""The Snakemake workflow, run for real: a tiny DAG on the synthetic dataset, interrupted and resumed, rerun as a
no-op, grown by a variant, mirrored into MLflow and browsed through a real `mlflow server`, by REST and in headless
Chromium. The configs and commands as dry runs: tests/test_workflow_configs.py."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cassle.core.io import read_csv_rows
from servers import mlflow_server
from workflow_runs import REPO, SNAKEMAKE, TINY, job_stats, snakemake, task_stats

pytestmark = pytest.mark.slow  # the tiny DAG (a module fixture) takes ~1.5 min on 2 cores


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def finished_pretrain_output(log: str) -> str | None:
    """metrics.json of a pretrain job that Snakemake reported finished in `log`, or None."""
    outputs = {jobid: output for output, jobid in
               re.findall(r"rule pretrain:.*?output: [^\n]*?(\S+/metrics\.json).*?jobid: (\d+)", log, re.S)}
    done = re.findall(r"Finished jobid: (\d+) \(Rule: pretrain\)", log)
    return next((outputs[jobid] for jobid in done if jobid in outputs), None)


@pytest.fixture(scope="module")
def tiny_workflow(tmp_path_factory):
    """The tiny DAG, interrupted (Ctrl-C) once a pretraining job has finished, then rerun to the end with the flag
    every profile sets (`--rerun-incomplete`: the job cut off mid-run starts again from its checkpoint)."""
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", "config.yaml", "--cores", "2", "--config", "launcher=local"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 300
    finished = None
    while finished is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        finished = finished_pretrain_output("".join(lines))
    process.send_signal(signal.SIGINT)  # what Ctrl-C does
    process.wait(timeout=120)
    reader.join(timeout=30)
    assert finished, "".join(lines)[-3000:]
    first = workdir / finished
    first_mtime = first.stat().st_mtime_ns
    output = snakemake(workdir, "--configfile", "config.yaml", "--cores", "2", "--config", "launcher=local",
                       "--rerun-incomplete")
    return {"workdir": workdir, "first": first, "first_mtime": first_mtime, "output": output}


def test_interrupted_workflow_finishes_without_redoing_finished_jobs(tiny_workflow):
    workdir = tiny_workflow["workdir"]
    assert tiny_workflow["first"].stat().st_mtime_ns == tiny_workflow["first_mtime"]
    stats = job_stats(tiny_workflow["output"])
    assert stats.get("pretrain", 0) <= 1  # the run finished before the interrupt is not redone
    runs = sorted((workdir / "results" / "pretrain").glob("*/metrics.json"))
    assert [path.parent.name.rsplit("-", 1)[0] for path in runs] == ["mocov2-cassle", "mocov2-vanilla"]
    for path in runs:
        metrics = json.loads(path.read_text())
        assert metrics["steps"] == 6 and metrics["provenance"]["git_sha"]
        assert (path.parent / "backbone.pt").is_file() and (path.parent / "work").is_dir()
    evals = sorted((workdir / "results" / "eval" / "linear").glob("*/synthetic/metrics.json"))
    assert len(evals) == 2 and all(0 <= json.loads(p.read_text())["metrics"]["top1"] <= 1 for p in evals)
    assert (workdir / "reports" / "README.md").is_file()
    assert list((workdir / "reports" / "tables").glob("*.md"))


def test_rerun_does_nothing_and_a_new_variant_replans_only_its_jobs(tiny_workflow):
    workdir = tiny_workflow["workdir"]
    output = snakemake(workdir, "--configfile", "config.yaml", "--cores", "2", "--dry-run")
    assert "Nothing to be done" in output, output[-3000:]

    # Runtime keys (left out of the run's hash), a default spelt out and other resources rerun nothing either.
    config = json.loads(json.dumps(TINY))
    config["pretrain"]["defaults"].update(num_workers=1, checkpoint_every=3, log_every=2, compat="original")
    config["launch"]["pretrain"]["mem_gb"] = 3
    config["evaluations"]["linear"]["options"].update(workers=1, batch_size=32)  # how, not what, evals compute
    (workdir / "moved.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "--configfile", "moved.yaml", "--cores", "2", "--dry-run")
    assert "Nothing to be done" in output, output[-3000:]

    # An option that changes what an evaluation computes reruns those evaluations and the report, nothing else.
    config["evaluations"]["linear"]["options"]["max_images"] = 48
    (workdir / "changed.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "--configfile", "changed.yaml", "--cores", "2", "--dry-run")
    assert job_stats(output) == {"evaluate": 2, "report": 1, "all": 1} and task_stats(output) == {"linear": 2}

    config = json.loads(json.dumps(TINY))
    config["pretrain"]["groups"]["main"]["grid"]["variant"].append("augself")
    (workdir / "grown.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "--configfile", "grown.yaml", "--cores", "2", "--dry-run")
    assert job_stats(output) == {"pretrain": 1, "evaluate": 1, "report": 1, "all": 1}
    assert "mocov2-augself-" in output and "mocov2-cassle-" not in output.split("rule report")[0]


def test_snakemake_report_is_self_contained(tiny_workflow):
    workdir = tiny_workflow["workdir"]
    snakemake(workdir, "--configfile", "config.yaml", "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "Tables" in html and "cassle report" in html


def workflow_server(workdir: Path) -> contextlib.AbstractContextManager[str]:
    """A real `mlflow server` on 127.0.0.1 serving the workflow's sqlite store; yields its address."""
    assert (workdir / "results" / "mlflow.db").is_file()
    return mlflow_server(workdir / "results" / "mlflow.db", workdir)


def experiment_runs(base: str) -> tuple[str, list[dict]]:
    """The id of the workflow's experiment and its runs, through the server's REST API."""
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cassle-test")
    with urllib.request.urlopen(request, timeout=10) as response:
        experiment = json.load(response)["experiment"]
    runs = _post(f"{base}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    return experiment["experiment_id"], runs


def test_mlflow_server_shows_the_workflow_runs(tiny_workflow):
    """Every job was mirrored into the sqlite store; a real `mlflow server` serves the runs over REST."""
    workdir = tiny_workflow["workdir"]
    with workflow_server(workdir) as base:
        _, runs = experiment_runs(base)
        tags = [{tag["key"]: tag["value"] for tag in run["data"].get("tags", [])} for run in runs]
        results = sorted(tag.get("cassle.result", "") for tag in tags)
        pretrain = sorted(f"pretrain/{path.parent.name}"
                          for path in (workdir / "results" / "pretrain").glob("*/metrics.json"))
        evals = sorted(str(p.parent.relative_to(workdir / "results"))
                       for p in (workdir / "results" / "eval").glob("*/*/*/metrics.json"))
        assert set(pretrain + evals) <= set(results), results
        parents = {tag["cassle.result"]: run["info"]["run_id"] for tag, run in zip(tags, runs)
                   if tag.get("cassle.result", "").startswith("pretrain/")}
        for tag in tags:
            if tag.get("cassle.result", "").startswith("eval/"):
                run = tag["cassle.result"].split("/")[2]
                assert tag["mlflow.parentRunId"] == parents[f"pretrain/{run}"]
        for run, tag in zip(runs, tags):  # true times: every job took a while, no run ends when it starts
            info = run["info"]
            assert info["status"] == "FINISHED", tag
            assert tag["cassle.result"].startswith("reports:") or int(info["end_time"]) > int(info["start_time"]), tag


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that work in containers without a GPU, a sandbox or a network beyond 127.0.0.1.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The runs table's rows (ag-grid: each row in several parts, `row-index` its place on screen, `row-id` its run id).
TABLE_ROWS = ("() => Array.from(document.querySelectorAll('[role=row][row-id]'))"
              ".map(row => [Number(row.getAttribute('row-index')), row.getAttribute('row-id'), row.innerText])")
PLOTTED = ("() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(plot => (plot.data || [])"
           ".filter(trace => trace.type === 'scatter')"
           ".map(trace => ({x: Array.from(trace.x), y: Array.from(trace.y)})))")


def test_the_mlflow_ui_lists_the_runs_with_their_evaluations_and_draws_the_loss(tiny_workflow, tmp_path):
    """Headless Chromium (Debian's, driven by Playwright) opens the experiment as printed by `cassle mlflow init`: the
    runs table lists every pretraining run with its evaluation nested under it, and a run's loss chart has one point
    per history.csv row. Screenshots land in the test's tmp folder."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from cassle.apps.tracking.command import ui_address

    workdir = tiny_workflow["workdir"]
    pretrain = sorted(path.parent for path in (workdir / "results" / "pretrain").glob("*/metrics.json"))
    with workflow_server(workdir) as base, sync_api.sync_playwright() as playwright:
        experiment_id, runs = experiment_runs(base)
        tags = {run["info"]["run_id"]: {tag["key"]: tag["value"] for tag in run["data"]["tags"]} for run in runs}
        parents = {tag["cassle.result"].split("/")[1]: run_id for run_id, tag in tags.items()
                   if tag["cassle.result"].startswith("pretrain/")}
        children = {tag["mlflow.parentRunId"]: run_id for run_id, tag in tags.items() if "mlflow.parentRunId" in tag}
        assert sorted(parents) == [folder.name for folder in pretrain] and set(children) == set(parents.values())
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            page.goto(ui_address(base, experiment_id), wait_until="load")
            for folder in pretrain:
                page.get_by_text(folder.name).first.wait_for(timeout=120_000)
            assistant = page.get_by_role("button", name="Close")  # the MLflow Assistant's panel, when it opens
            if assistant.count():
                assistant.first.click()
            for parent in parents.values():  # expand each pretraining run (the square left of its name)
                page.locator(f"[role=row][row-id='{parent}'] button[data-component-id*=runnamecellrenderer]").click()
                page.locator(f"[role=row][row-id='{children[parent]}']").first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "runs-table.png"))
            rows = page.evaluate(TABLE_ROWS)
            order = [run_id for _, run_id in sorted({(index, run_id) for index, run_id, _ in rows})]
            for name, parent in parents.items():  # each pretraining run, its evaluation right under it
                assert order[order.index(parent) + 1] == children[parent], (name, order)
                texts = "".join(text for _, run_id, text in rows if run_id in (parent, children[parent]))
                assert name in texts and "linear/synthetic" in texts and "synthetic/train" in texts

            page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parents[pretrain[0].name]}/model-metrics"
                      "?workflowType=machine_learning", wait_until="load")
            page.get_by_placeholder("Search metric charts").fill("loss")
            rows = read_csv_rows(pretrain[0] / "history.csv")
            steps, losses = [int(row["step"]) for row in rows], [float(row["loss"]) for row in rows]
            deadline = time.time() + 120
            while not any(trace["x"] == steps for trace in page.evaluate(PLOTTED)) and time.time() < deadline:
                time.sleep(0.5)
            page.screenshot(path=str(tmp_path / "loss-chart.png"))
            trace = next(trace for trace in page.evaluate(PLOTTED) if trace["x"] == steps)
            assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(trace["y"], losses, strict=True))
        finally:
            browser.close()


