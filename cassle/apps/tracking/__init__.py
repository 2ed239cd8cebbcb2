"""MLflow mirror of results/: the files are the source of truth, MLflow a browsable copy (docs/mlflow.md).

Nothing here imports MLflow at module level; the functions do.
"""

from __future__ import annotations

from cassle.apps.tracking.runs import MissingParentWarning, TrackingWarning, log_reports, log_result
from cassle.apps.tracking.store import default_experiment, init_store, tracking_uri
from cassle.apps.tracking.sync import SyncReport, sync

__all__ = ["MissingParentWarning", "SyncReport", "TrackingWarning", "default_experiment", "init_store", "log_reports",
           "log_result", "sync", "tracking_uri"]
