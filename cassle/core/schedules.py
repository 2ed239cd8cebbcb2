"""Per-step schedules: learning rate (linear warm-up then cosine decay) and momentum-encoder EMA rate.

Everything is indexed by optimiser step, not by epoch. (The authors step ``CosineAnnealingLR`` once per
epoch, so their lr is constant within an epoch, and their Barlow Twins warm-up is a per-epoch
``LinearLR`` from lr/10: ``warmup_start=base_lr / 10`` reproduces its start value.)

Momentum-encoder rates: BYOL increases m from 0.996 to 1 with a cosine (``ema_momentum`` defaults);
MoCo-v2 uses a constant 0.999 (``base=final=0.999``); MoCo-v3's paper increases m from 0.99 to 1 with
the same cosine, whereas the CASSLE authors' MoCo-v3 keeps a fixed 0.999.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from cassle.core.optim import LR_MULTIPLIER


def _check_step(fn: str, step: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"{fn}: total_steps={total_steps}; it must be >= 1")
    if not 0 <= step <= total_steps:
        raise ValueError(f"{fn}: step={step} is outside [0, total_steps={total_steps}]")


def _cosine_ramp(progress: float) -> float:
    """1 at progress 0, 0 at progress 1, half a cosine in between."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    final_lr: float = 0.0,
    warmup_start: float = 0.0,
) -> float:
    """Lr at ``step`` in [0, total_steps]: linear from ``warmup_start`` (step 0) to ``base_lr`` (step
    ``warmup_steps``), then cosine decay to ``final_lr`` at ``total_steps``. ``warmup_steps=0``: no
    warm-up."""
    _check_step("warmup_cosine", step, total_steps)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_cosine: warmup_steps={warmup_steps}; it must be in [0, total_steps={total_steps})")
    if step < warmup_steps:
        return warmup_start + (base_lr - warmup_start) * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + (base_lr - final_lr) * _cosine_ramp(progress)


def ema_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """EMA rate of the momentum encoder at ``step``: ``final - (final - base) * (cos(pi*step/total) + 1)/2``
    (``base`` at step 0, ``final`` at ``total_steps``; constant when ``base == final``)."""
    _check_step("ema_momentum", step, total_steps)
    for name, value in (("base", base), ("final", final)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"ema_momentum: {name}={value}; it must be in [0, 1]")
    return final - (final - base) * _cosine_ramp(step / total_steps)


FIXED_LR = "fixed_lr"


class StepwiseLR:
    """Sets every group's lr to ``schedule(step) x group["lr_multiplier"]`` (multiplier 1 if absent).

    Groups flagged ``fixed_lr`` keep the lr they had on construction (SimSiam's predictor).

    The lrs for step 0 are set on construction; call ``step()`` after each ``optimizer.step()``.
    ``schedule`` is any ``step -> lr`` function, e.g.
    ``functools.partial(warmup_cosine, total_steps=T, warmup_steps=W, base_lr=lr)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.last_step = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        value = self.schedule(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] if group.get(FIXED_LR) else value * group.get(LR_MULTIPLIER, 1.0)

    def step(self) -> None:
        """Advance one optimiser step and set the lrs for it."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current lr of each group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The step reached (the schedule itself comes from the config)."""
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the saved step (and set the lrs for it)."""
        self.last_step = int(state["last_step"])
        self._apply()
