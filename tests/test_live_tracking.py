"""Live MLflow runs (cassle.apps.tracking.live): real training, real sqlite stores and servers, real signals and
concurrent processes, no mocks."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cassle.apps.cli import main
from cassle.apps.engine.trainer import NonFiniteLossError, pretrain
from cassle.apps.launch import _live
from cassle.apps.tracking import sync
from cassle.apps.tracking.content import LIVE_TAG, live_content
from cassle.apps.tracking.live import LiveRun
from cassle.apps.tracking.runs import create_run, log_result
from cassle.apps.tracking.store import experiment_id, store_session
from cassle.config import resolve
from cassle.core.io import exclusive_lock, read_csv_rows, read_json
from cassle.core.observe import FAILED, FINISHED, KILLED, Terminated, final_status, stop_on_sigterm
from cassle.data import dataset_digest, load_pretrain

REPO = Path(__file__).resolve().parents[1]
FIXTURE_PRETRAIN = REPO / "tests" / "fixtures" / "results" / "pretrain" / "mocov2-cassle-967a8f84"
TINY = {"framework": "mocov2", "variant": "cassle", "backbone": "resnet_narrow", "dataset": "synthetic",
        "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32, "queue_size": 64,
        "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16, "num_workers": 0, "log_every": 1}
FAST = {"flush_s": 0.2}


def sqlite_uri(results: Path) -> str:
    return f"sqlite:///{results.resolve()}/mlflow.db"


def runs_by_result(uri: str, experiment: str = "cassle") -> dict[str, list]:
    client = MlflowClient(tracking_uri=uri)
    found: dict[str, list] = {}
    for run in client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000):
        found.setdefault(run.data.tags.get("cassle.result"), []).append(run)
    return found


def only_run(uri: str, result: str, experiment: str = "cassle"):
    runs = runs_by_result(uri, experiment)[result]
    assert len(runs) == 1, [(run.info.run_id, run.info.status) for run in runs]
    return runs[0]


def history_points(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key))


def csv_points(out: Path, key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in read_csv_rows(out / "history.csv")]


def ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


class Probe(LiveRun):
    """A LiveRun that, when step `at` is logged, waits for the store to show the run (from another client) and keeps
    what it saw: the run exists and grows while training goes on."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.seen = at, None

    def metrics(self, step, values):
        super().metrics(step, values)
        if step != self.at:
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store_session(self.uri) as client:  # the store's lock: the tables may be in the making
                experiment = client.get_experiment_by_name(self.experiment)
                runs = client.search_runs([experiment.experiment_id]) if experiment else []
                steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] if runs else []
            if steps and max(steps) >= step:
                self.seen = {"status": runs[0].info.status, "steps": sorted(steps),
                             "finished_files": (self.result_dir / "metrics.json").exists()}
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pretraining run logged live (system metrics on) into the default store of its results folder."""
    results = tmp_path_factory.mktemp("live") / "results"
    out = results / "pretrain" / "mocov2-cassle-0000aaaa"
    uri = sqlite_uri(results)
    probe = Probe(out, results, uri, "cassle", system_metrics=True, at=4, **FAST)
    pretrain(resolve({**TINY, "max_steps": 8, "checkpoint_every": 4}), out, progress=False, observer=probe)
    return Namespace(results=results, out=out, uri=uri, probe=probe)


def test_the_run_appears_when_training_starts_and_grows_with_real_steps_and_times(trained):
    assert trained.probe.seen == {"status": "RUNNING", "steps": [1, 2, 3, 4], "finished_files": False}
    run = only_run(trained.uri, "pretrain/mocov2-cassle-0000aaaa")
    client = MlflowClient(tracking_uri=trained.uri)
    record = read_json(trained.out / "metrics.json")
    assert run.info.status == FINISHED and run.data.tags[LIVE_TAG] == "true"
    assert run.data.tags["cassle.metrics_sha256"]  # completed from the folder, as `cassle mlflow log` does
    rows = read_csv_rows(trained.out / "history.csv")
    for key in ("loss", "ssl", "lr", "momentum", "samples_per_s", "epoch"):
        assert history_points(client, run.info.run_id, key) == csv_points(trained.out, key), key
    stamps = {metric.step: metric.timestamp for metric in client.get_metric_history(run.info.run_id, "loss")}
    for row in rows:  # each point carries the wall-clock time its step was logged at (history.csv's `time`)
        assert abs(stamps[int(row["step"])] - float(row["time"]) * 1000) < 1000
    provenance = record["provenance"]
    assert ms(provenance["started_utc"]) <= run.info.start_time <= min(stamps.values())
    assert max(stamps.values()) <= run.info.end_time == ms(provenance["time_utc"])
    assert run.data.metrics["final/steps"] == 8 and "final/datasets" not in run.data.metrics
    assert run.data.params["batch_size"] == "16"

    (used,) = run.inputs.dataset_inputs
    expected = load_pretrain("synthetic", None)
    assert used.dataset.name == "synthetic/train" and used.dataset.digest == dataset_digest(expected)
    assert '"num_items": 2048' in used.dataset.profile and len(expected) == 2048
    assert [(tag.key, tag.value) for tag in used.tags] == [("mlflow.data.context", "train")]
    assert record["datasets"] == [{"name": "synthetic", "split": "train", "root": None, "size": 2048,
                                   "digest": dataset_digest(expected), "context": "train"}]
    system = {key for key in run.data.metrics if key.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    assert not any(key.startswith("system/gpu") for key in system)  # no GPU on the machines that run the tests

    # The after-the-fact mirror finds the run complete: nothing logged twice.
    assert log_result(trained.out, trained.results, trained.uri, "cassle") == run.info.run_id
    report = sync(trained.results, trained.uri, "cassle")
    assert report.logged == [] and report.present == ["pretrain/mocov2-cassle-0000aaaa"]
    assert history_points(client, run.info.run_id, "loss") == csv_points(trained.out, "loss")


def test_an_evaluation_is_a_live_child_run_with_its_progress_and_datasets(trained, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = trained.results / "eval" / "linear" / trained.out.name / "synthetic"
    assert main(["eval", "linear", str(trained.out), "--dataset", "synthetic", "--out", str(out), "--max-images", "48",
                 "--workers", "0", "--batch-size", "16", "--quiet", "--mlflow", str(trained.results)]) == 0
    parent = only_run(trained.uri, f"pretrain/{trained.out.name}")
    child = only_run(trained.uri, f"eval/linear/{trained.out.name}/synthetic")
    record = read_json(out / "metrics.json")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.data.tags[LIVE_TAG] == "true"
    assert child.info.status == FINISHED and child.data.metrics["top1"] == record["metrics"]["top1"]
    assert parent.info.end_time <= child.info.start_time < child.info.end_time == ms(record["provenance"]["time_utc"])
    assert ms(record["provenance"]["started_utc"]) >= child.info.start_time
    client = MlflowClient(tracking_uri=trained.uri)
    sweep = client.get_metric_history(child.info.run_id, "progress/linear probe")
    assert len(sweep) == 45 and max(metric.value for metric in sweep) == 1.0
    assert max(m.value for m in client.get_metric_history(child.info.run_id, "progress/features synthetic/train")) == 1
    inputs = {item.dataset.name: item for item in child.inputs.dataset_inputs}
    assert set(inputs) == {"synthetic/train", "synthetic/val", "synthetic/test"}
    assert all('"num_items": 48' in item.dataset.profile and item.tags[0].value == "eval" for item in inputs.values())


def test_a_non_finite_loss_ends_the_run_failed(tmp_path):
    results = tmp_path / "results"
    out = results / "pretrain" / "mocov2-cassle-0000bbbb"
    config = resolve({**TINY, "max_steps": 40, "checkpoint_every": 1, "base_lr": 1e7, "warmup_epochs": 1.0})
    with pytest.raises(NonFiniteLossError):
        pretrain(config, out, progress=False, observer=LiveRun(out, results, sqlite_uri(results), "cassle", **FAST))
    run = only_run(sqlite_uri(results), "pretrain/mocov2-cassle-0000bbbb")
    assert run.info.status == FAILED and run.info.end_time >= run.info.start_time
    assert "cassle.metrics_sha256" not in run.data.tags
    assert history_points(MlflowClient(tracking_uri=sqlite_uri(results)), run.info.run_id, "loss") == \
        csv_points(out, "loss")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_store_that_is_down_warns_once_and_sync_backfills_with_the_real_times(tmp_path):
    results = tmp_path / "results"
    out = results / "pretrain" / "mocov2-cassle-0000cccc"
    down = f"http://127.0.0.1:{_closed_port()}"
    said = io.StringIO()
    pretrain(resolve({**TINY, "max_steps": 6, "checkpoint_every": 3}), out, progress=False,
             observer=LiveRun(out, results, down, "cassle", stream=said, **FAST))
    warnings = said.getvalue().splitlines()
    assert len(warnings) == 1 and down in warnings[0] and "cassle mlflow sync" in warnings[0], warnings
    assert (out / "metrics.json").is_file()

    uri = sqlite_uri(results)
    assert sync(results, uri, "cassle").logged == ["pretrain/mocov2-cassle-0000cccc"]
    run = only_run(uri, "pretrain/mocov2-cassle-0000cccc")
    client = MlflowClient(tracking_uri=uri)
    stamps = {metric.step: metric.timestamp for metric in client.get_metric_history(run.info.run_id, "loss")}
    assert stamps == {int(row["step"]): int(float(row["time"]) * 1000) for row in read_csv_rows(out / "history.csv")}
    provenance = read_json(out / "metrics.json")["provenance"]
    assert (run.info.start_time, run.info.end_time) == (ms(provenance["started_utc"]), ms(provenance["time_utc"]))
    assert sync(results, uri, "cassle").logged == []


def test_a_store_that_is_slow_never_stalls_the_job(tmp_path):
    """The sqlite store is locked by another process for the whole job: training ends on time with one warning, and
    the run is completed once the store answers again."""
    results = tmp_path / "results"
    out = results / "pretrain" / "mocov2-cassle-0000dddd"
    uri = sqlite_uri(results)
    said = io.StringIO()
    live = LiveRun(out, results, uri, "cassle", stream=said, finish_timeout_s={FINISHED: 1.0, "other": 1.0}, **FAST)
    with exclusive_lock(f"{results / 'mlflow.db'}.lock"):
        pretrain(resolve({**TINY, "max_steps": 4, "checkpoint_every": 2}), out, progress=False, observer=live)
        assert "did not answer within 1 s" in said.getvalue() and live.thread.is_alive()
    live.thread.join(300)
    run = only_run(uri, "pretrain/mocov2-cassle-0000dddd")
    assert run.info.status == FINISHED and run.data.tags[LIVE_TAG] == "true"
    assert history_points(MlflowClient(tracking_uri=uri), run.info.run_id, "loss") == csv_points(out, "loss")


def test_the_mirror_completes_a_live_run_without_logging_a_point_twice(tmp_path):
    """A live run that stopped half-way (its store went down) is completed by `cassle mlflow log`, not duplicated."""
    results = tmp_path / "results"
    folder = results / "pretrain" / FIXTURE_PRETRAIN.name
    folder.mkdir(parents=True)
    for name in ("metrics.json", "history.csv"):
        (folder / name).write_bytes((FIXTURE_PRETRAIN / name).read_bytes())
    uri = sqlite_uri(results)
    rows = read_csv_rows(folder / "history.csv")
    with store_session(uri) as client:
        experiment = experiment_id(client, uri, "cassle")
        content = live_content(folder, results, read_json(folder / "metrics.json")["config"])
        run_id = create_run(client, experiment, content, None, 1_000, **{LIVE_TAG: "true"})
        for row in rows[:4]:
            client.log_metric(run_id, "loss", float(row["loss"]), 2_000, int(row["step"]))
        client.set_terminated(run_id, KILLED)
    assert log_result(folder, results, uri, "cassle") == run_id
    run = only_run(uri, f"pretrain/{folder.name}")
    client = MlflowClient(tracking_uri=uri)
    assert run.info.status == FINISHED and run.info.start_time == 1_000
    assert history_points(client, run_id, "loss") == csv_points(folder, "loss")
    assert [metric.timestamp for metric in client.get_metric_history(run_id, "loss")][:4] == [2_000] * 4
    assert sync(results, uri, "cassle").logged == []


def _pretrain_job(results: Path, name: str, seed: int, env: dict) -> subprocess.Popen:
    config = results.parent / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**TINY, "seed": seed, "max_steps": 8, "checkpoint_every": 2, "batch_size": 8}))
    command = [sys.executable, "-m", "cassle", "pretrain", str(config), "--out", str(results / "pretrain" / name),
               "--quiet", "--mlflow", str(results)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_concurrent_jobs_lose_nothing_and_a_killed_job_resumes_its_run(tmp_path):
    """Three `cassle pretrain --mlflow` processes log into one fresh sqlite store at once; one is stopped by SIGTERM
    after its first checkpoint (KILLED), then run again: it resumes its checkpoint and the same MLflow run."""
    results = tmp_path / "results"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    names = [f"mocov2-cassle-0000eee{index}" for index in range(3)]
    jobs = [_pretrain_job(results, name, seed, env) for seed, name in enumerate(names)]
    checkpoint = results / "pretrain" / names[0] / "work" / "ckpt-2.pt.sha256"
    deadline = time.monotonic() + 400
    while not checkpoint.exists() and jobs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs[0].send_signal(signal.SIGTERM)
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [143, 0, 0], outputs
    assert "stopped by SIGTERM" in outputs[0] and not (results / "pretrain" / names[0] / "metrics.json").exists()
    uri = sqlite_uri(results)
    killed = only_run(uri, f"pretrain/{names[0]}")
    assert killed.info.status == KILLED and killed.info.end_time >= killed.info.start_time

    again = _pretrain_job(results, names[0], 0, env)
    assert again.wait(timeout=600) == 0, again.communicate()[0]
    assert read_json(results / "pretrain" / names[0] / "metrics.json")["resumed"] is True
    client = MlflowClient(tracking_uri=uri)
    for name in names:
        run = only_run(uri, f"pretrain/{name}")
        assert run.info.status == FINISHED, name
        for key in ("loss", "lr", "samples_per_s"):  # every point once, none lost
            assert history_points(client, run.info.run_id, key) == csv_points(results / "pretrain" / name, key)
    assert only_run(uri, f"pretrain/{names[0]}").info.run_id == killed.info.run_id
    assert sync(results, uri, "cassle").logged == []


def test_signals_end_a_computation_as_killed():
    assert [final_status(error) for error in (None, ValueError(), KeyboardInterrupt(), SystemExit(-1),
                                              Terminated(signal.SIGTERM))] == [FINISHED, FAILED] + [KILLED] * 3
    with pytest.raises(Terminated), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    heard: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(-signum))
    try:
        with stop_on_sigterm(heard.append):  # another handler (submitit's) decides: told, not raised
            os.kill(os.getpid(), signal.SIGTERM)
        assert heard == [signal.SIGTERM, -signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_live_options_are_checked_before_the_job_and_launch_forwards_them(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "max_steps": 2}))
    assert main(["pretrain", str(config), "--out", str(tmp_path / "elsewhere"), "--mlflow", str(tmp_path / "r")]) == 1
    error = capsys.readouterr().err
    assert "is not inside the results folder" in error and "with --mlflow" in error
    assert not (tmp_path / "elsewhere").exists()
    assert main(["pretrain", str(config), "--out", str(tmp_path / "r" / "x"), "--mlflow", str(tmp_path / "r")]) == 1
    assert "expected pretrain/<run> or eval/<task>/<run>/<dataset>" in capsys.readouterr().err
    assert main(["pretrain", str(config), "--out", str(tmp_path / "x"), "--mlflow-system-metrics"]) == 1
    assert "--mlflow-system-metrics needs --mlflow" in capsys.readouterr().err

    argv = ["pretrain", "cfg.yaml", "--out", "r/pretrain/x"]
    live = Namespace(mlflow=Path("r"), mlflow_system_metrics=True)
    assert _live(argv, live) == [*argv, "--mlflow", "r", "--mlflow-system-metrics"]
    assert _live(["report", "--out", "reports"], live) == ["report", "--out", "reports"]
    assert _live(argv, Namespace(mlflow=None, mlflow_system_metrics=False)) == argv
