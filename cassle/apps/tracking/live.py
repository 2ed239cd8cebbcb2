"""Live MLflow runs: a job's run exists from its first step, its curves grow as it trains, its status is true.

:class:`LiveRun` is the :class:`cassle.core.observe.Observer` that `cassle pretrain --mlflow RESULTS` and `cassle eval
... --mlflow RESULTS` hand to the computation. The computation only appends to in-memory queues; one background thread
does every store operation, every ``flush_s`` seconds, in one batch, under the store's write discipline
(cassle.apps.tracking.store.store_session). So logging never blocks a training step, and a store that is down or slow
costs one warning, never the job: points wait in the queue (the oldest dropped past MAX_POINTS) and the thread tries
again later. The files stay the source of truth: when the job ends FINISHED, its run is completed from the result
folder exactly as `cassle mlflow log` would (the same code: missing points, params, artifacts, digest), and whatever
the live run missed, `cassle mlflow sync` adds later.

- start: a run tagged ``cassle.live`` with the folder's identity (``cassle.result``), RUNNING, started now; an
  evaluation's run is a child of its pretraining run. A job resumed from a checkpoint (start step > 0) resumes the
  newest incomplete live run of its folder (RUNNING again) and skips the points that run holds up to its last step.
- end: FINISHED (completed from the folder), FAILED or KILLED with the time it ended. A stop asked by a signal that
  another handler decides on (submitit ignores SIGTERM before a requeue) marks the run KILLED at the next flush.
- datasets: logged as run inputs (mlflow.data) as the computation reports them.
- system metrics (``system_metrics=True``): CPU, memory, disk, network and, where NVML finds a GPU, GPU utilisation
  and memory, sampled at every flush with MLflow's own monitors, logged as ``system/...`` with the seconds since the
  run started as the step.

mlflow itself (seconds to import) is imported by the background thread when it first touches the store, so that it
never delays the start of training.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cassle.apps.tracking.content import (
    LIVE_TAG,
    RESULT_TAG,
    RunContent,
    live_content,
    mlflow_name,
    read_result,
    time_ms,
)
from cassle.apps.tracking.runs import (
    create_run,
    dataset_inputs,
    ensure_logged,
    live_candidate,
    now_ms,
    parent_run_id,
    search,
)
from cassle.apps.tracking.store import experiment_id, first_line, store_session
from cassle.core.observe import FINISHED, KILLED, RUNNING, DatasetUse

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

FLUSH_S = 5.0  # seconds between two store batches
RETRY_S = 60.0  # after a store failure, seconds before the next try
MAX_POINTS = 200_000  # metric points kept while the store cannot be reached (history.csv keeps them all)
FINISH_TIMEOUT_S = {FINISHED: 120.0, "other": 20.0}  # longest wait for the store when the job ends
LATER = "`cassle mlflow sync` logs the result folder once it is finished"


class SystemSampler:
    """MLflow's system-metrics monitors (CPU, memory, disk, network; NVIDIA or AMD GPUs where their management library
    finds one), sampled on demand instead of by MLflow's own thread, which would write to the store on its own."""

    def __init__(self) -> None:
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        self.monitors = [CPUMonitor(), DiskMonitor(), NetworkMonitor(), *self._gpu()]

    @staticmethod
    def _gpu() -> list[Any]:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
        from mlflow.system_metrics.metrics.rocm_monitor import ROCMMonitor

        for monitor in (GPUMonitor, ROCMMonitor):
            try:
                return [monitor()]
            except Exception:  # no library, no driver or no GPU: no GPU metrics
                continue
        return []

    def sample(self) -> dict[str, float]:
        """``system/<name>``: the values now (CPU utilisation: since the previous sample)."""
        values: dict[str, float] = {}
        for monitor in self.monitors:
            monitor.collect_metrics()
            values.update(monitor.aggregate_metrics())
            monitor.clear_metrics()
        return {f"system/{name}": float(value) for name, value in values.items()}


class LiveRun:
    """The MLflow run of one result folder, kept up to date while its job runs (module docstring).

    ``result_dir`` must be ``RESULTS/pretrain/<run>`` or ``RESULTS/eval/<task>/<run>/<dataset>`` (checked here, before
    the job starts). Messages go to ``stream`` (one warning at most per run).
    """

    def __init__(self, result_dir: Path, results: Path, uri: str, experiment: str, *, system_metrics: bool = False,
                 flush_s: float = FLUSH_S, finish_timeout_s: Mapping[str, float] = FINISH_TIMEOUT_S,
                 stream: IO[str] | None = None) -> None:
        self.result_dir, self.results = Path(result_dir), Path(results)
        self.content: RunContent = live_content(self.result_dir, self.results)
        self.uri, self.experiment = uri, experiment
        self.system_metrics, self.flush_s, self.finish_timeout_s = system_metrics, flush_s, dict(finish_timeout_s)
        self.stream = stream or sys.stderr
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.start_step, self.start_ms = 0, now_ms()
        self.origin_ms = self.start_ms  # when the run started (a resumed one: its first attempt), for system steps
        self.points: deque[tuple[str, float, int, int]] = deque(maxlen=MAX_POINTS)  # key, value, ms, step
        self.datasets: deque[DatasetUse] = deque()
        self.status: str | None = None  # set once, by finished()
        self.stop_asked = False
        self.skip: dict[str, int] = {}  # key -> last step the resumed run holds
        self.logged_inputs: set[tuple[str, str]] = set()
        self.sampler: SystemSampler | None = None
        self.warned = False
        self.next_try = 0.0
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    # ---- the Observer side: called by the computation, never blocks (finished waits a bounded time) ----------------
    def started(self, step: int, params: Mapping[str, Any], since: str | None = None) -> None:
        self.start_step = step
        self.start_ms = self.origin_ms = time_ms(since) or now_ms()
        if self.content.kind == "pretrain":
            self.content = live_content(self.result_dir, self.results, params)
        self.thread = threading.Thread(target=self._work, name="cassle-mlflow-live", daemon=True)
        self.thread.start()

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        stamp = now_ms()
        for key, value in values.items():
            self.points.append((mlflow_name(key), float(value), stamp, step))

    def dataset(self, use: DatasetUse) -> None:
        self.datasets.append(use)

    def signalled(self, signum: int) -> None:
        """A stop was asked (a signal another handler decides on): the run shows KILLED unless the job goes on."""
        self.stop_asked = True
        self.wake.set()

    def finished(self, status: str) -> None:
        self.status = status
        self.wake.set()
        if self.thread is None:
            return
        timeout = self.finish_timeout_s.get(status, self.finish_timeout_s.get("other", 20.0))
        self.thread.join(timeout)
        if self.thread.is_alive():
            self._say(f"MLflow store {self.uri} did not answer within {timeout:g} s at the end of the job; left "
                      f"{self.content.result} as it was ({LATER})")

    # ---- the background thread --------------------------------------------------------------------------------------
    def _work(self) -> None:
        # At the same scheduling priority as training, on purpose: the thread holds the GIL while it logs, and a
        # lowered priority (nice) lets a busy machine deschedule it mid-batch, GIL held, stalling the training thread.
        while True:
            final = self.status  # read before flushing: every point of a finished computation is queued by now
            if final is not None or time.monotonic() >= self.next_try:
                self._attempt(final)
            if final is not None:
                return
            self.wake.wait(self.flush_s)
            self.wake.clear()

    def _attempt(self, final: str | None) -> None:
        try:
            with store_session(self.uri) as client:
                experiment = self.experiment_id = self.experiment_id or experiment_id(client, self.uri, self.experiment)
                if self.run_id is None:
                    self.run_id = self._open(client, experiment)
                self._flush(client)
                if final is not None:
                    self._close(client, experiment, final)
                elif self.stop_asked:
                    self.stop_asked = False
                    client.set_terminated(self.run_id, KILLED)
        except Exception as error:  # unreachable, locked, refused: the job goes on
            self.next_try = time.monotonic() + RETRY_S
            if not self.warned:
                self.warned = True
                self._say(f"MLflow store {self.uri} cannot be written ({first_line(error)}); the job goes on and its "
                          f"files stay the source of truth ({LATER})")

    def _say(self, message: str) -> None:
        print(f"cassle: warning: {message}", file=self.stream, flush=True)

    def _open(self, client: MlflowClient, experiment: str) -> str:
        """The run of this job: the live run a resumed job continues, else a new one."""
        from mlflow.entities import Param

        if self.start_step > 0:
            run = live_candidate(search(client, experiment, RESULT_TAG, self.content.result))
            if run is not None:
                client.update_run(run.info.run_id, status=RUNNING)
                self.origin_ms = run.info.start_time
                self.skip = {key: max((m.step for m in client.get_metric_history(run.info.run_id, key)), default=-1)
                             for key in run.data.metrics}
                self.logged_inputs = {(item.dataset.name, item.dataset.digest)
                                      for item in (run.inputs.dataset_inputs if run.inputs else [])}
                return run.info.run_id
        parent_id = parent_run_id(client, experiment, self.content, self.results)
        run_id = create_run(client, experiment, self.content, parent_id, self.start_ms, **{LIVE_TAG: "true"})
        client.log_batch(run_id, params=[Param(key, value) for key, value in self.content.params.items()])
        return run_id

    def _flush(self, client: MlflowClient) -> None:
        """Log the queued points (and a system sample) in one batch, and the datasets not logged yet."""
        from mlflow.entities import Metric

        batch = []
        while self.points:
            batch.append(self.points.popleft())
        if self.system_metrics:
            self.sampler = self.sampler or SystemSampler()
            seconds = max(0, (now_ms() - self.origin_ms) // 1000)
            batch += [(key, value, now_ms(), seconds) for key, value in self.sampler.sample().items()]
        metrics = [Metric(key, value, stamp, step) for key, value, stamp, step in batch
                   if step > self.skip.get(key, -1)]
        try:
            if metrics:
                client.log_batch(self.run_id, metrics=metrics)
        except BaseException:
            self.points.extendleft(reversed([point for point in batch if not point[0].startswith("system/")]))
            raise
        uses = list(self.datasets)
        inputs = [item for item in dataset_inputs(map(dataclasses.asdict, uses))
                  if (item.dataset.name, item.dataset.digest) not in self.logged_inputs]
        if inputs:
            client.log_inputs(self.run_id, datasets=inputs)
            self.logged_inputs |= {(item.dataset.name, item.dataset.digest) for item in inputs}
        for _ in uses:  # logged: only now off the queue
            self.datasets.popleft()

    def _close(self, client: MlflowClient, experiment: str, status: str) -> None:
        """FINISHED with a result: complete the run from the folder; otherwise end it with its status."""
        if status == FINISHED and (self.result_dir / "metrics.json").is_file():
            ensure_logged(client, experiment, read_result(self.result_dir, self.results), self.results,
                          prefer=self.run_id)
        else:
            client.set_terminated(self.run_id, status if status != FINISHED else "FAILED")
