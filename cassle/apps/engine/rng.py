"""Capture and restore every random state a training run draws from, for an exact continuation.

Covered: Python ``random``, the numpy global generator, torch's CPU generator, torch's CUDA generators
(all devices, when CUDA is available) and any number of named ``torch.Generator`` objects (e.g. the
data-order and augmentation generators the loop owns). The captured dict holds only tensors, lists,
tuples, ints, floats and strings, so it loads with ``torch.load(weights_only=True)``. Each process has
its own states: under DDP every rank must save and restore its own capture for a bit-exact resume.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def _numpy_state() -> dict[str, Any]:
    """numpy's state with its key array as a tensor, so that it loads with weights_only=True."""
    state = np.random.get_state(legacy=False)
    inner = state["state"]
    return {**state, "state": {"key": torch.from_numpy(inner["key"].astype(np.int64)), "pos": inner["pos"]}}


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    inner = state["state"]
    key = inner["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state({**state, "state": {"key": key, "pos": int(inner["pos"])}})


def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot of the global random states and of the named generators."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }


def _check_names(saved: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    if set(saved) != set(generators):
        raise ValueError(
            f"restore_rng: the saved state has generators {sorted(saved)} but {sorted(generators)} were "
            "given; pass exactly the generators that were captured (same names)"
        )


def _restore_cuda(states: list[torch.Tensor]) -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(states) != available:
        warnings.warn(
            f"restore_rng: the state was captured with {len(states)} CUDA device(s) and {available} are "
            "available now; only the common ones are restored, so the continuation is not bit-exact",
            RuntimeWarning,
            stacklevel=3,
        )
    for device, state in enumerate(states[:available]):
        torch.cuda.set_rng_state(state, device)


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Put every random state back as ``capture_rng`` saw it; ``generators`` must have the captured names."""
    generators = generators or {}
    _check_names(state["generators"], generators)
    random.setstate(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    _restore_cuda(list(state["cuda"]))
    for name, gen in generators.items():
        gen.set_state(state["generators"][name].cpu())
