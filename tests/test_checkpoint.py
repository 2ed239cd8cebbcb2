"""Checkpoints: round trip, bit-exact continuation, corrupt-file fallback, pruning, config-hash guard."""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cassle.apps.engine import (
    CheckpointManager,
    CheckpointWarning,
    ConfigMismatchError,
    capture_rng,
    load_model_state,
    model_state,
    restore_rng,
)
from cassle.core.optim import build_optimizer, param_groups
from cassle.core.schedules import StepwiseLR, ema_momentum, warmup_cosine

from damage import drop_sidecar, garble, truncate

# ---------------------------------------------------------------- a tiny training loop

N_SAMPLES, BATCH, TOTAL_STEPS = 24, 6, 10
STEPS_PER_EPOCH = N_SAMPLES // BATCH
_data_gen = torch.Generator().manual_seed(1234)
X = torch.randn(N_SAMPLES, 5, generator=_data_gen)
Y = torch.randint(0, 3, (N_SAMPLES,), generator=_data_gen)


@dataclass
class Run:
    """Everything a loop owns: online and momentum model, optimiser, scheduler, generators, position."""

    model: nn.Module
    target: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: StepwiseLR
    generators: dict[str, torch.Generator]
    step: int = 0
    perm: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def make_run(seed: int) -> Run:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    target = copy.deepcopy(model)
    optimizer = build_optimizer("lars", param_groups(model, 1e-4), lr=0.5)
    scheduler = StepwiseLR(optimizer, partial(warmup_cosine, total_steps=TOTAL_STEPS, warmup_steps=3, base_lr=0.5))
    generators = {"data": torch.Generator().manual_seed(seed + 1), "aug": torch.Generator().manual_seed(seed + 2)}
    return Run(model, target, optimizer, scheduler, generators)


def seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(run: Run, until: int) -> None:
    """Steps draw from every RNG: data order and noise (named generators), dropout (torch global),
    and a jitter factor from Python's and numpy's global generators."""
    while run.step < until:
        position = run.step % STEPS_PER_EPOCH
        if position == 0:
            run.perm = torch.randperm(N_SAMPLES, generator=run.generators["data"])
        idx = run.perm[position * BATCH : (position + 1) * BATCH]
        noise = 0.1 * torch.randn(BATCH, 5, generator=run.generators["aug"])
        jitter = 1.0 + 0.01 * random.random() + 0.01 * float(np.random.rand())
        loss = F.cross_entropy(run.model((X[idx] + noise) * jitter), Y[idx])
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        m = ema_momentum(run.step, TOTAL_STEPS)
        with torch.no_grad():
            for p_t, p_o in zip(run.target.parameters(), run.model.parameters()):
                p_t.mul_(m).add_(p_o, alpha=1 - m)
        run.step += 1


def run_state(run: Run) -> dict[str, Any]:
    return {
        "model": model_state(run.model),
        "target": model_state(run.target),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": run.step,
        "perm": run.perm,
        "rng": capture_rng(run.generators),
    }


def restore_run(run: Run, state: dict[str, Any], with_rng: bool = True) -> None:
    load_model_state(run.model, state["model"])
    load_model_state(run.target, state["target"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.perm = state["step"], state["perm"]
    if with_rng:
        restore_rng(state["rng"], run.generators)


def tensors_of(run: Run) -> list[torch.Tensor]:
    """Parameters, BN buffers, momentum model and optimiser buffers."""
    buffers = [s["momentum_buffer"] for s in run.optimizer.state.values()]
    return [*run.model.state_dict().values(), *run.target.state_dict().values(), *buffers]


def all_equal(a: Run, b: Run) -> bool:
    return all(torch.equal(x, y) for x, y in zip(tensors_of(a), tensors_of(b), strict=True))


def resumed_run(work: Path, k: int, with_rng: bool = True) -> Run:
    """Train k steps, checkpoint, rebuild everything from other seeds, restore, train to the end."""
    first = make_run(0)
    seed_globals(7)
    train(first, k)
    CheckpointManager(work, config_hash="abc").save(run_state(first), first.step)
    seed_globals(99)  # the fresh process would have other global states
    fresh = make_run(5)
    assert not all_equal(fresh, first)
    loaded = CheckpointManager(work, config_hash="abc").load_latest()
    assert loaded is not None and loaded[1] == k
    restore_run(fresh, loaded[0], with_rng=with_rng)
    train(fresh, TOTAL_STEPS)
    return fresh


def test_exact_continuation_mid_epoch(tmp_path: Path) -> None:
    straight = make_run(0)
    seed_globals(7)
    train(straight, TOTAL_STEPS)
    resumed = resumed_run(tmp_path / "a", k=6)  # 6 = epoch 1, batch 2
    assert all_equal(straight, resumed)
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    # Control: without restoring the random states the continuation diverges.
    assert not all_equal(straight, resumed_run(tmp_path / "b", k=6, with_rng=False))


# ---------------------------------------------------------------- round trip, rng


def test_round_trip_tensors_optimizer_generators(tmp_path: Path) -> None:
    run = make_run(0)
    seed_globals(3)
    train(run, 3)
    state = run_state(run)
    CheckpointManager(tmp_path).save(state, 3)
    loaded, step = CheckpointManager(tmp_path).load_latest()  # type: ignore[misc]
    assert step == 3
    for key in ("model", "target"):
        assert loaded[key].keys() == state[key].keys()
        assert all(torch.equal(loaded[key][k], v) for k, v in state[key].items())
    saved_opt, loaded_opt = state["optimizer"], loaded["optimizer"]
    assert saved_opt["param_groups"] == loaded_opt["param_groups"]
    assert all(torch.equal(loaded_opt["state"][i]["momentum_buffer"], s["momentum_buffer"])
               for i, s in saved_opt["state"].items())
    # The generators continue with the same draws after a restore.
    expected = {name: torch.rand(4, generator=g) for name, g in run.generators.items()}
    expected_globals = (random.random(), np.random.rand(), torch.rand(1))
    others = {name: torch.Generator().manual_seed(42) for name in run.generators}
    restore_rng(loaded["rng"], others)
    assert all(torch.equal(torch.rand(4, generator=others[n]), v) for n, v in expected.items())
    assert (random.random(), np.random.rand()) == expected_globals[:2]
    assert torch.equal(torch.rand(1), expected_globals[2])


def test_restore_rng_requires_same_generator_names() -> None:
    state = capture_rng({"data": torch.Generator()})
    with pytest.raises(ValueError, match=r"\['data'\].*\['aug'\]"):
        restore_rng(state, {"aug": torch.Generator()})


def test_model_state_strips_wrappers() -> None:
    module = nn.Linear(2, 2)
    plain = module.state_dict()
    for wrapped in (nn.DataParallel(module), torch.compile(module)):
        assert list(model_state(wrapped)) == list(plain)
    target = nn.DataParallel(nn.Linear(2, 2))
    load_model_state(target, plain)
    assert torch.equal(target.module.weight, module.weight)


# ---------------------------------------------------------------- files on disk


def _save_steps(manager: CheckpointManager, steps: list[int]) -> None:
    for step in steps:
        manager.save({"value": torch.full((1000,), float(step))}, step)


def test_sidecar_is_sha256sum_compatible(tmp_path: Path) -> None:
    path = CheckpointManager(tmp_path).save({"x": torch.ones(3)}, 4)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "ckpt-4.pt.sha256").read_text() == f"{digest}  ckpt-4.pt\n"


@pytest.mark.parametrize("damage", [truncate, garble, drop_sidecar])
def test_bad_newest_falls_back_with_warning(tmp_path: Path, damage: Any) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    _save_steps(manager, [1, 2])
    damage(manager.path(2))
    with pytest.warns(CheckpointWarning, match=r"ckpt-2\.pt"):
        state, step = manager.load_latest()  # type: ignore[misc]
    assert step == 1 and torch.equal(state["value"], torch.full((1000,), 1.0))


def test_no_valid_checkpoint_raises_and_empty_folder_gives_none(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "work")
    assert manager.load_latest() is None and manager.latest_step() is None
    _save_steps(manager, [1])
    garble(manager.path(1))
    with pytest.warns(CheckpointWarning), pytest.raises(RuntimeError, match=r"no valid checkpoint.*ckpt-1\.pt"):
        manager.load_latest()


def test_only_uncommitted_checkpoints_mean_start_over(tmp_path: Path) -> None:
    """A first save killed before its checksum was written leaves nothing worth keeping: warn and start over."""
    manager = CheckpointManager(tmp_path)
    _save_steps(manager, [1])
    drop_sidecar(manager.path(1))
    with pytest.warns(CheckpointWarning, match=r"ckpt-1\.pt.*starts over"):
        assert manager.load_latest() is None


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_pruning_keeps_newest_and_drops_abandoned_future(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=2)
    (tmp_path / ".ckpt-9.pt.dead.tmp").write_bytes(b"left by a killed save")
    _save_steps(manager, [1, 2, 3, 4, 5])
    assert _listing(tmp_path) == ["ckpt-4.pt", "ckpt-4.pt.sha256", "ckpt-5.pt", "ckpt-5.pt.sha256"]
    assert manager.latest_step() == 5
    _save_steps(manager, [3])  # resumed from an earlier point: 4 and 5 are an abandoned continuation
    assert _listing(tmp_path) == ["ckpt-3.pt", "ckpt-3.pt.sha256"]
    with pytest.raises(ValueError, match="keep=0"):
        CheckpointManager(tmp_path, keep=0)


def test_config_hash_mismatch_is_refused(tmp_path: Path) -> None:
    _save_steps(CheckpointManager(tmp_path, config_hash="aaaa11112222"), [1])
    with pytest.raises(ConfigMismatchError, match=r"aaaa11112222.*bbbb33334444.*--out"):
        CheckpointManager(tmp_path, config_hash="bbbb33334444").load_latest()
    assert CheckpointManager(tmp_path, config_hash="aaaa11112222").load_latest() is not None
