"""The MLflow mirror of results/, against real MLflow stores (sqlite files and a real `mlflow server`), no mocks."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from cassle.apps.cli import main
from cassle.apps.tracking import (
    MissingParentWarning,
    TrackingWarning,
    init_store,
    log_reports,
    log_result,
    sync,
    tracking_uri,
)
from cassle.apps.tracking.content import mlflow_name, read_result
from cassle.apps.tracking.runs import write_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "results"
RUN = "mocov2-cassle-967a8f84"
PRETRAIN = f"pretrain/{RUN}"
EVALS = [f"eval/{task}/{RUN}/synthetic" for task in ("conditioning", "fewshot", "linear", "retrieval")]


def copy_results(root: Path, folders: tuple[str, ...] = (PRETRAIN, *EVALS)) -> Path:
    """A results tree with the fixture folders named (relative to RESULTS) under ``root``/results."""
    results = root / "results"
    for folder in folders:
        shutil.copytree(FIXTURES / folder, results / folder)
    return results


def _log_in_child(barrier, queue, index: int, folder: str, results: str, uri: str) -> None:
    """One of the concurrent writers: even ones create the store first (init_store), odd ones log straight away."""
    barrier.wait()
    outcome = (index, None, None)
    try:
        experiment_id = init_store(uri, "concurrent") if index % 2 == 0 else None
        outcome = (index, experiment_id, log_result(Path(results) / folder, Path(results), uri, "concurrent"))
    finally:
        queue.put(outcome)
    if outcome[2] is None:
        raise SystemExit(1)


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory) -> SimpleNamespace:
    """Eight processes log four pretraining folders and their linear evaluations at once into a FRESH sqlite store
    (see test_eight_processes_...). Its database, tables made, then seeds the other stores of this module: creating
    MLflow's tables takes seconds, so it happens once; the other tests use experiments of their own."""
    root = tmp_path_factory.mktemp("concurrent")
    runs = [f"mocov2-cassle-{index:08x}" for index in range(4)]
    folders = [f"pretrain/{run}" for run in runs] + [f"eval/linear/{run}/synthetic" for run in runs]
    results = root / "results"
    for run in runs:
        shutil.copytree(FIXTURES / PRETRAIN, results / "pretrain" / run)
        shutil.copytree(FIXTURES / EVALS[2], results / "eval" / "linear" / run / "synthetic")
    db = root / "fresh" / "mlflow.db"
    # fork: the children start with MLflow and its sqlite store code already imported (eight imports would cost
    # ~30 s of CPU on 2 cores); each child still opens its own connections to the fresh sqlite file, the case that
    # needs the lock.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(len(folders)), context.Queue()
    children = [context.Process(target=_log_in_child,
                                args=(barrier, queue, index, folder, str(results), f"sqlite:///{db}"))
                for index, folder in enumerate(folders)]
    for child in children:
        child.start()
    reported = [queue.get(timeout=300) for _ in children]
    for child in children:
        child.join(timeout=300)
    return SimpleNamespace(uri=f"sqlite:///{db}", db=db, runs=runs, folders=folders, reported=reported,
                           exitcodes=[child.exitcode for child in children])


@pytest.fixture(scope="module")
def store(tmp_path_factory, concurrent) -> str:
    """One sqlite store for the module; each test uses its own experiment."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    shutil.copy(concurrent.db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def experiment(request) -> str:
    return request.node.name


def runs_by_result(uri: str, experiment: str) -> dict[str, list]:
    """Active runs of the experiment grouped by their tag cassle.result."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    grouped: dict[str, list] = {}
    for run in client.search_runs([found.experiment_id], max_results=1000):
        grouped.setdefault(run.data.tags["cassle.result"], []).append(run)
    return grouped


def only_runs(uri: str, experiment: str) -> dict[str, object]:
    """The run of each result, asserting that no result has two."""
    grouped = runs_by_result(uri, experiment)
    assert all(len(runs) == 1 for runs in grouped.values()), {key: len(runs) for key, runs in grouped.items()}
    return {key: runs[0] for key, runs in grouped.items()}


def rewrite_metrics(folder: Path, **changes) -> None:
    record = json.loads((folder / "metrics.json").read_text())
    record.update(changes)
    (folder / "metrics.json").write_text(json.dumps(record, indent=2))


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "res") == f"sqlite:///{(tmp_path / 'res').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri(tmp_path) == "http://env:5000"
    assert tracking_uri(tmp_path, "http://explicit:1") == "http://explicit:1"


def test_names_mlflow_refuses_are_rewritten():
    assert mlflow_name("recall@1") == "recall_at_1"
    assert mlflow_name("map@r") == "map_at_r"
    assert mlflow_name("a//b") == "a/_/b" and mlflow_name("x/../y") == "x/_/y"
    assert mlflow_name("5way_1shot/accuracy") == "5way_1shot/accuracy"


def test_pretrain_and_eval_runs_mirror_their_files(tmp_path, store, experiment):
    results = copy_results(tmp_path)
    pre_dir = results / PRETRAIN
    (pre_dir / "work").mkdir()
    (pre_dir / "work" / "slurm_job_id").write_text("4242\n")
    (pre_dir / "work" / "ckpt-50.pt").write_bytes(b"not an artifact")
    linear_dir = results / EVALS[2]
    rewrite_metrics(linear_dir, options={**json.loads((linear_dir / "metrics.json").read_text())["options"],
                                         "note": "x" * 7000})
    (linear_dir / "features").mkdir()
    (linear_dir / "features" / "train.png").write_bytes(b"not an artifact either")

    # The linear eval comes first: its pretraining run is logged before it, as its parent.
    linear_id = log_result(linear_dir, results, store, experiment)
    pre_id = log_result(pre_dir, results, store, experiment)
    other_ids = [log_result(results / folder, results, store, experiment) for folder in EVALS]
    assert other_ids[2] == linear_id
    runs = only_runs(store, experiment)
    assert set(runs) == {PRETRAIN, *EVALS}
    client = MlflowClient(tracking_uri=store)

    pre = runs[PRETRAIN]
    raw = (pre_dir / "metrics.json").read_bytes()
    record = json.loads(raw)
    config, provenance = record["config"], record["provenance"]
    assert pre.info.run_id == pre_id and pre.info.run_name == RUN and pre.info.status == "FINISHED"
    # params: the flattened config; nested dicts joined with '.', values spelt as in JSON
    expected_params = {}
    for key, value in config.items():
        if isinstance(value, dict):
            expected_params.update({f"{key}.{inner}": json.dumps(v) for inner, v in value.items()})
        else:
            expected_params[key] = value if isinstance(value, str) else json.dumps(value)
    assert pre.data.params == expected_params
    assert pre.data.params["augment.jitter"] == "[0.4, 0.4, 0.4, 0.1]" and pre.data.params["data_root"] == "null"
    # per-step metrics: every history.csv column, every row, `step` as the step
    with open(pre_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    for column in rows[0]:
        if column == "step":
            continue
        logged = sorted((m.step, m.value) for m in client.get_metric_history(pre_id, column))
        assert logged == [(int(row["step"]), float(row[column])) for row in rows], column
    # final metrics: `final` and the top-level numbers under final/ (bools, strings and dicts left out)
    assert {key: value for key, value in pre.data.metrics.items() if key.startswith("final/")} == {
        "final/loss": record["final"]["loss"], "final/ssl": record["final"]["ssl"], "final/steps": 100,
        "final/epochs": record["epochs"], "final/samples_per_s": record["samples_per_s"], "final/world_size": 1}
    tags = pre.data.tags
    assert tags["framework"] == "mocov2" and tags["variant"] == "cassle" and tags["task"] == "pretrain"
    assert tags["omega_keys"] == ",".join(config["conditioning.omega_keys"]) and tags["injection"] == "cat"
    assert tags["dataset"] == "synthetic" and tags["config_hash"] == provenance["config_hash"]
    assert tags["experiment_hash"] == record["experiment_hash"] and tags["git_sha"] == provenance["git_sha"]
    assert tags["slurm_job_id"] == "4242"  # from work/slurm_job_id: this provenance has none
    assert tags["cassle.result"] == PRETRAIN and tags["cassle.metrics_sha256"] == hashlib.sha256(raw).hexdigest()
    stamp = int(datetime.fromisoformat(provenance["time_utc"]).timestamp() * 1000)
    assert pre.info.start_time == stamp == pre.info.end_time
    assert {a.path for a in client.list_artifacts(pre_id)} == {"metrics.json", "history.csv"}
    assert Path(client.download_artifacts(pre_id, "history.csv", str(tmp_path))).read_bytes() == \
        (pre_dir / "history.csv").read_bytes()

    for folder in EVALS:
        run = runs[folder]
        task = folder.split("/")[1]
        evaluation = json.loads((results / folder / "metrics.json").read_text())
        assert run.data.tags["mlflow.parentRunId"] == pre_id
        assert run.info.run_name == f"{task}/synthetic" and run.data.tags["task"] == task
        assert run.data.params["task"] == task and run.data.params["dataset"] == "synthetic"
        assert run.data.params["source.kind"] == "run"
        assert run.data.tags["framework"] == "mocov2" and run.data.tags["experiment_hash"] == record["experiment_hash"]
        assert run.data.tags["config_hash"] == evaluation["provenance"]["config_hash"]
    linear = runs[EVALS[2]]
    linear_record = json.loads((linear_dir / "metrics.json").read_text())
    assert linear.data.metrics == {"top1": linear_record["metrics"]["top1"],
                                   "penalty": linear_record["metrics"]["penalty"]}
    assert json.loads(linear.data.params["penalties"]) == linear_record["options"]["penalties"]
    assert len(linear.data.params["note"]) == 6000 and linear.data.params["note"].endswith("metrics.json]")
    fewshot = json.loads((results / EVALS[1] / "metrics.json").read_text())["metrics"]
    assert runs[EVALS[1]].data.metrics["5way_5shot/accuracy"] == fewshot["5way_5shot"]["accuracy"]
    retrieval = runs[EVALS[3]].data.metrics
    recall = json.loads((results / EVALS[3] / "metrics.json").read_text())["metrics"]["recall@1"]
    assert retrieval["recall_at_1"] == recall
    assert "figure_queries" not in retrieval  # lists are skipped
    assert {a.path for a in client.list_artifacts(linear_id)} == {"metrics.json"}
    assert {a.path for a in client.list_artifacts(runs[EVALS[0]].info.run_id)} == \
        {"metrics.json", "conditioning.png", "conditioning.pdf"}


def test_logging_and_sync_are_idempotent(tmp_path, store, experiment):
    results = copy_results(tmp_path)
    first = sync(results, store, experiment)
    assert sorted(first.logged) == sorted([PRETRAIN, *EVALS]) and not first.present and first.ok
    again = sync(results, store, experiment)
    assert not again.logged and sorted(again.present) == sorted(first.logged)
    runs = only_runs(store, experiment)
    assert log_result(results / PRETRAIN, results, store, experiment) == runs[PRETRAIN].info.run_id
    assert len(only_runs(store, experiment)) == 5

    # A deleted run is re-logged, and only that one.
    MlflowClient(tracking_uri=store).delete_run(runs[EVALS[1]].info.run_id)
    backfill = sync(results, store, experiment)
    assert backfill.logged == [EVALS[1]] and len(backfill.present) == 4
    assert set(only_runs(store, experiment)) == {PRETRAIN, *EVALS}

    # A pretraining folder whose metrics.json changed replaces its run; its evaluations follow the new run.
    old_id = runs[PRETRAIN].info.run_id
    rewrite_metrics(results / PRETRAIN, steps=200)
    new_id = log_result(results / PRETRAIN, results, store, experiment)
    runs = only_runs(store, experiment)
    assert new_id != old_id and runs[PRETRAIN].info.run_id == new_id
    assert runs[PRETRAIN].data.metrics["final/steps"] == 200
    assert all(runs[folder].data.tags["mlflow.parentRunId"] == new_id for folder in EVALS)

    # Two jobs that logged the same pretraining folder to a server at once leave two runs: sync keeps one.
    client = MlflowClient(tracking_uri=store)
    duplicate = write_run(client, client.get_experiment_by_name(experiment).experiment_id,
                          read_result(results / PRETRAIN, results), None)
    client.set_tag(runs[EVALS[0]].info.run_id, "mlflow.parentRunId", duplicate)
    healed = sync(results, store, experiment)
    assert not healed.logged and len(healed.present) == 5
    runs = only_runs(store, experiment)
    assert all(runs[folder].data.tags["mlflow.parentRunId"] == runs[PRETRAIN].info.run_id for folder in EVALS)
    assert sync(results, store, experiment).logged == []


def test_an_eval_without_its_pretraining_folder_is_adopted_later(tmp_path, store, experiment):
    results = copy_results(tmp_path, (EVALS[2],))
    with pytest.warns(MissingParentWarning, match=PRETRAIN):
        eval_id = log_result(results / EVALS[2], results, store, experiment)
    alone = only_runs(store, experiment)[EVALS[2]]
    assert "mlflow.parentRunId" not in alone.data.tags and alone.data.tags["cassle.parent_missing"] == "true"
    shutil.copytree(FIXTURES / PRETRAIN, results / PRETRAIN)
    pre_id = log_result(results / PRETRAIN, results, store, experiment)
    adopted = only_runs(store, experiment)[EVALS[2]]
    assert adopted.info.run_id == eval_id and adopted.data.tags["mlflow.parentRunId"] == pre_id
    assert "cassle.parent_missing" not in adopted.data.tags


def test_reports_folder_is_one_run_relogged_when_a_file_changes(tmp_path, store, experiment):
    reports = tmp_path / "reports"
    (reports / "tables").mkdir(parents=True)
    (reports / "figures").mkdir()
    (reports / "tables" / "table2.md").write_text("| method | top1 |\n|---|---|\n| cassle | 0.28 |\n")
    shutil.copy(FIXTURES / EVALS[0] / "conditioning.png", reports / "figures" / "fig3.png")
    (reports / "README.md").write_text("# reports\n")
    run_id = log_reports(reports, store, experiment)
    assert log_reports(reports, store, experiment) == run_id
    client = MlflowClient(tracking_uri=store)
    listed = {a.path for folder in ("", "tables", "figures") for a in client.list_artifacts(run_id, folder or None)}
    assert {"README.md", "tables/table2.md", "figures/fig3.png"} <= listed
    (reports / "tables" / "table2.md").write_text("| method | top1 |\n|---|---|\n| cassle | 0.30 |\n")
    new_id = log_reports(reports, store, experiment)
    assert new_id != run_id and set(only_runs(store, experiment)) == {"reports:reports"}


def test_an_unusable_store_warns_with_the_command_that_logs_the_folder_later(tmp_path, experiment):
    results = copy_results(tmp_path, (PRETRAIN,))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "README.md").write_text("# reports\n")
    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    uri = f"sqlite:///{tmp_path}/blocker/mlflow.db"
    with pytest.warns(TrackingWarning, match=rf"could not log {PRETRAIN} .*run `cassle mlflow sync`"):
        assert log_result(results / PRETRAIN, results, uri, experiment) is None
    # sync never logs a reports folder: the remedy is log-reports again
    with pytest.warns(TrackingWarning, match=r"log reports:reports .*run `cassle mlflow log-reports \S*reports`"):
        assert log_reports(tmp_path / "reports", uri, experiment) is None


def test_malformed_folders_raise_before_touching_the_store(tmp_path, experiment):
    results = copy_results(tmp_path, (PRETRAIN,))
    uri = f"sqlite:///{tmp_path}/never.db"
    with pytest.raises(ValueError, match="pretrain/<run> or eval/<task>/<run>/<dataset>"):
        log_result(results / "pretrain", results, uri, experiment)
    (results / "eval" / "linear" / RUN / "cifar10").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="metrics.json does not exist"):
        log_result(results / "eval" / "linear" / RUN / "cifar10", results, uri, experiment)
    with pytest.raises(ValueError, match="not inside the results folder"):
        log_result(tmp_path, results, uri, experiment)
    assert not (tmp_path / "never.db").exists()


def test_eight_processes_log_concurrently_into_a_fresh_sqlite_store(concurrent):
    runs, folders, uri = concurrent.runs, concurrent.folders, concurrent.uri
    assert concurrent.exitcodes == [0] * len(folders)
    reported = concurrent.reported
    assert len({experiment_id for _, experiment_id, _ in reported if experiment_id is not None}) == 1

    logged = only_runs(uri, "concurrent")
    assert set(logged) == set(folders)
    assert {run_id for _, _, run_id in reported} == {run.info.run_id for run in logged.values()}
    config = json.loads((FIXTURES / PRETRAIN / "metrics.json").read_text())["config"]
    with open(FIXTURES / PRETRAIN / "history.csv", newline="") as handle:
        columns = next(csv.reader(handle))[1:]  # after `step`
    linear = json.loads((FIXTURES / EVALS[2] / "metrics.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    for run in runs:
        pre = logged[f"pretrain/{run}"]
        assert len(pre.data.params) == len(config) + 1  # augself.weights holds two keys
        assert all(len(client.get_metric_history(pre.info.run_id, column)) == 10 for column in columns)
        child = logged[f"eval/linear/{run}/synthetic"]
        assert child.data.tags["mlflow.parentRunId"] == pre.info.run_id
        assert child.data.metrics == linear["metrics"]
        assert len(child.data.params) == 2 + len(linear["options"]) + len(linear["source"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rest(base: str, endpoint: str, body: dict | None = None) -> dict:
    """GET (body None, as query) or POST (JSON body) to the server's REST API."""
    if body is None:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}")
    else:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def wait_until_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    """Poll the server's /health until it answers 200; fail with its log if it exits or takes 3 minutes."""
    for _ in range(360):
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        try:
            server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"mlflow server not healthy after 3 minutes:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """End the server and the processes it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_server_down_then_sync_backfills_through_a_real_server(tmp_path, concurrent, capsys):
    results = copy_results(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with pytest.warns(TrackingWarning, match=rf"{base}.*cassle mlflow sync"):
        assert log_result(results / PRETRAIN, results, base, "served") is None
    assert main(["mlflow", "log", str(results / EVALS[0]), "--results", str(results), "--tracking-uri", base,
                 "--experiment", "served"]) == 0  # the job still succeeds
    assert "cassle mlflow sync" in capsys.readouterr().err

    log = tmp_path / "server.log"
    shutil.copy(concurrent.db, tmp_path / "server.db")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "served-artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(base, server, log)
        # One result reaches the server before the backfill; sync logs exactly the other four.
        present = log_result(results / EVALS[1], results, base, "served")
        assert present is not None
        assert main(["mlflow", "sync", "--results", str(results), "--tracking-uri", base,
                     "--experiment", "served"]) == 0
        out = capsys.readouterr().out
        # the eval logged above brought its parent along: pretrain/ is present too
        assert "3 logged, 2 already present, 0 failed" in out
        for folder in (EVALS[0], EVALS[2], EVALS[3]):
            assert f"logged  {folder}" in out
        assert main(["mlflow", "sync", "--results", str(results), "--tracking-uri", base,
                     "--experiment", "served"]) == 0
        assert "0 logged, 5 already present, 0 failed" in capsys.readouterr().out

        experiment_id = rest(base, "experiments/get-by-name?" + urllib.parse.urlencode(
            {"experiment_name": "served"}))["experiment"]["experiment_id"]
        found = rest(base, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100})["runs"]
        results_tags = sorted(tag["value"] for run in found for tag in run["data"]["tags"]
                              if tag["key"] == "cassle.result")
        assert results_tags == sorted([PRETRAIN, *EVALS])
        pre_id = next(run["info"]["run_id"] for run in found
                      if {"key": "cassle.result", "value": PRETRAIN} in run["data"]["tags"])
        children = rest(base, "runs/search", {"experiment_ids": [experiment_id],
                                              "filter": f"tags.`mlflow.parentRunId` = '{pre_id}'"})["runs"]
        assert len(children) == 4
        artifacts = rest(base, "artifacts/list?" + urllib.parse.urlencode({"run_id": pre_id}))["files"]
        assert {item["path"] for item in artifacts} == {"metrics.json", "history.csv"}
    finally:
        stop(server)


def test_experiments_are_created_for_model_training(store, experiment):
    """The UI's experiment kind (tag mlflow.experimentKind): set at creation, added to an older experiment, a user's
    own choice kept."""
    client = MlflowClient(tracking_uri=store)
    init_store(store, f"{experiment}-new")
    older = client.create_experiment(f"{experiment}-older")
    chosen = client.create_experiment(f"{experiment}-chosen", tags={"mlflow.experimentKind": "genai_development"})
    assert init_store(store, f"{experiment}-older") == older and init_store(store, f"{experiment}-chosen") == chosen
    kinds = [client.get_experiment_by_name(f"{experiment}-{name}").tags.get("mlflow.experimentKind")
             for name in ("new", "older", "chosen")]
    assert kinds == ["custom_model_development", "custom_model_development", "genai_development"]


def test_a_process_killed_while_creating_the_store_leaves_no_broken_database(tmp_path):
    """MLflow creates a sqlite store's tables for seconds; a job killed meanwhile (SIGKILL after a requeue's grace time)
    must leave nothing that later writes fail on: the tables are made aside and moved into place."""
    db = tmp_path / "results" / "mlflow.db"
    creating = db.with_name("mlflow.db.creating")
    code = f"from cassle.apps.tracking.store import init_store; init_store('sqlite:///{db}', 'first')"
    child = subprocess.Popen([sys.executable, "-c", code])
    while not creating.exists() and child.poll() is None:
        time.sleep(0.001)
    child.kill()
    child.wait()
    assert creating.exists() and not db.exists()  # killed half-way through the creation
    assert init_store(f"sqlite:///{db}", "second") == "1"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.create_run("1")
    client.log_metric(run.info.run_id, "loss", 1.0, step=1)
    assert not creating.exists() and [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0]
