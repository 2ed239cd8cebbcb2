"""The pretraining engine: one resumable training loop for every framework x variant (`cassle pretrain`)."""

from __future__ import annotations

from cassle.apps.engine.checkpoint import (
    CheckpointManager,
    CheckpointWarning,
    ConfigMismatchError,
    load_model_state,
    model_state,
    unwrap_model,
)
from cassle.apps.engine.rng import capture_rng, restore_rng
from cassle.apps.engine.trainer import NonFiniteLossError, Trainer, pretrain

__all__ = [
    "CheckpointManager",
    "CheckpointWarning",
    "ConfigMismatchError",
    "NonFiniteLossError",
    "Trainer",
    "capture_rng",
    "load_model_state",
    "model_state",
    "pretrain",
    "restore_rng",
    "unwrap_model",
]
