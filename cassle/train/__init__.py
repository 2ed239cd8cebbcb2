"""Training-engine infrastructure: checkpoints with exact resume, RNG capture, optimisers, schedules."""

from __future__ import annotations

from cassle.train.checkpoint import (
    CheckpointManager,
    CheckpointWarning,
    ConfigMismatchError,
    load_model_state,
    model_state,
    unwrap_model,
)
from cassle.train.optim import LARS, build_optimizer, param_groups, scaled_lr
from cassle.train.rng import capture_rng, restore_rng
from cassle.train.schedules import StepwiseLR, ema_momentum, warmup_cosine

__all__ = [
    "LARS",
    "CheckpointManager",
    "CheckpointWarning",
    "ConfigMismatchError",
    "StepwiseLR",
    "build_optimizer",
    "capture_rng",
    "ema_momentum",
    "load_model_state",
    "model_state",
    "param_groups",
    "restore_rng",
    "scaled_lr",
    "unwrap_model",
    "warmup_cosine",
]
