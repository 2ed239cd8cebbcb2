"""Where the MLflow store is and how to reach it: URI resolution, the sqlite file lock, fail-fast HTTP, experiments.

MLflow is imported inside the functions (the CLI imports this package whenever it builds its parser).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.core.errors import CassleError
from cassle.core.io import exclusive_lock

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT = "cassle"
ARTIFACTS_FOLDER = "mlartifacts"
# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless this tag calls it a model-training one; then
# it opens on the runs table. The values are those of the UI's own "experiment kind" switch.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# Set while talking to a tracking server: an unreachable server must fail in seconds, not after MLflow's default
# 7 retries with backoff (minutes); and no "View run at" line on the job's stdout for every run.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_SQLITE = "sqlite:///"


def tracking_uri(results: Path, explicit: str | None = None) -> str:
    """The store to log to: ``explicit`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<results>/mlflow.db``."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"{_SQLITE}{Path(results).resolve()}/mlflow.db"


def default_experiment() -> str:
    """``$MLFLOW_EXPERIMENT_NAME``, else ``cassle``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the current folder unless absolute); None for other
    URIs and in-memory databases."""
    if not uri.startswith(_SQLITE):
        return None
    path = uri[len(_SQLITE):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@contextmanager
def _exclusive(db: Path | None) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively, so that one process at a time writes the sqlite file (no lock for servers)."""
    if db is None:
        yield
        return
    with exclusive_lock(f"{db}.lock"):
        yield


@contextmanager
def _http_settings(uri: str) -> Iterator[None]:
    """Set HTTP_SETTINGS in the environment for the duration of the block (http(s) URIs only)."""
    if not is_http(uri):
        yield
        return
    saved = {name: os.environ.get(name) for name in HTTP_SETTINGS}
    os.environ.update(HTTP_SETTINGS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def store_session(uri: str) -> Iterator[MlflowClient]:
    """A client for ``uri`` used under the store's write discipline: an exclusive file lock next to a sqlite database
    (its creation included), fail-fast HTTP settings for a tracking server."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None:  # import the sqlite store's code (seconds) before taking the lock, not while holding it
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    with _exclusive(db), _http_settings(uri):
        if db is not None and (not db.exists() or db.stat().st_size == 0):
            _create_sqlite(db)
        yield MlflowClient(tracking_uri=uri)


def _create_sqlite(db: Path) -> None:
    """Create the tables of a new sqlite store in ``<db>.creating``, then move the file into place (under the store's
    lock). MLflow creates them one migration at a time, for seconds: a job killed meanwhile (a requeue, a cancel) would
    leave a half-made database on which every later write fails ("table ... already exists")."""
    from mlflow.tracking import MlflowClient

    creating = db.with_name(f"{db.name}.creating")
    creating.unlink(missing_ok=True)  # left by a creation that was killed
    MlflowClient(tracking_uri=f"{_SQLITE}{creating.resolve()}").search_experiments(max_results=1)
    os.replace(creating, db)


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go next to the database (``<db folder>/mlartifacts``), not into the current
    folder; a tracking server decides for itself (None)."""
    db = sqlite_path(uri)
    return (db.resolve().parent / ARTIFACTS_FOLDER).as_uri() if db is not None else None


def experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """Id of the experiment ``name``, created when missing (a concurrent creation is tolerated) as a model-training
    experiment (EXPERIMENT_KIND_TAG; an existing experiment without the tag gets it)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri),
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise CassleError(f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted in {uri}; restore it "
                          f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}` with "
                          "MLFLOW_TRACKING_URI set) or choose another name with --experiment")
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # created by an older cassle, or by hand: a user's choice stays
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id


def init_store(uri: str, experiment: str) -> str:
    """Create the store (the sqlite database and its tables, once) and the experiment; returns the experiment id.

    Safe when several processes call it at once on a fresh sqlite file: they take turns on ``<db>.lock``.
    Raises CassleError naming the URI when the store cannot be reached or created.
    """
    try:
        with store_session(uri) as client:
            return experiment_id(client, uri, experiment)
    except CassleError:
        raise
    except Exception as error:  # MLflow, SQLAlchemy and requests each have their own exception types
        raise CassleError(f"could not create the MLflow store {uri} with experiment {experiment!r}: "
                          f"{first_line(error)}") from error


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message for one-line warnings; a long one keeps its start and its end (where
    requests puts the cause, e.g. "Connection refused")."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else f"{text[:limit // 2]} ... {text[-limit // 2:]}"
