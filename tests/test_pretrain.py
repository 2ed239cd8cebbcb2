"""The pretraining engine and `cassle pretrain`: outputs, exact resume after SIGKILL, non-finite losses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from cassle.apps.engine.trainer import NonFiniteLossError, pretrain
from cassle.config import resolve
from cassle.core.io import read_csv_rows, read_json

REPO = Path(__file__).resolve().parents[1]
TINY = {"framework": "mocov2", "variant": "cassle", "backbone": "resnet_narrow", "dataset": "synthetic",
        "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32, "queue_size": 64,
        "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16, "num_workers": 0}


def run_cli(config: dict, out: Path, *extra: str, wait: bool = True):
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "cassle", "pretrain", str(path), "--out", str(out), "--quiet", *extra]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_outputs_and_torchvision_loadable_backbone(tmp_path):
    config = resolve({**TINY, "backbone": "resnet18", "max_steps": 2, "batch_size": 8, "log_every": 1,
                      "checkpoint_every": 1})
    metrics = pretrain(config, tmp_path, progress=False)
    assert metrics["steps"] == 2 and metrics["provenance"]["config_hash"]
    backbone = torch.load(tmp_path / "backbone.pt", weights_only=True)
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem chosen for 32 px views
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    rows = read_csv_rows(tmp_path / "history.csv")
    assert [int(row["step"]) for row in rows] == [1, 2] and all(float(row["loss"]) > 0 for row in rows)
    saved = read_json(tmp_path / "metrics.json")
    assert saved["provenance"]["seed"] == config["seed"] and saved["config"]["framework"] == "mocov2"
    assert set(torch.load(tmp_path / "checkpoint.pt", weights_only=True)) == {"model", "config", "step"}


@pytest.mark.slow
def test_sigkill_then_rerun_gives_bit_identical_weights(tmp_path):
    config = {**TINY, "max_steps": 16, "checkpoint_every": 4, "log_every": 2}
    straight = run_cli(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    killed = tmp_path / "killed"
    process = run_cli(config, killed, wait=False)
    first_checkpoint = killed / "work" / "ckpt-4.pt.sha256"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert first_checkpoint.exists() and not (killed / "metrics.json").exists(), "the kill came too late to test"

    resumed = run_cli(config, killed)
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(killed / "metrics.json")["resumed"] is True
    for name in ("backbone.pt", "checkpoint.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        a, b = (x.get("model", x) for x in (a, b))
        assert a.keys() == b.keys()
        differing = [key for key in a if not torch.equal(a[key], b[key])]
        assert not differing, f"{name} differs after resume: {differing[:5]}"
    drop_speed = lambda rows: [{k: v for k, v in row.items() if k not in ("samples_per_s", "time")}  # noqa: E731
                               for row in rows]
    assert drop_speed(read_csv_rows(killed / "history.csv")) == drop_speed(
        read_csv_rows(tmp_path / "straight" / "history.csv"))


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
    """A learning rate warming up to 1e7 blows the weights up after a few good steps (checkpointed every step)."""
    config = resolve({**TINY, "max_steps": 40, "checkpoint_every": 1, "base_lr": 1e7, "warmup_epochs": 1.0})
    with pytest.raises(NonFiniteLossError) as error:
        pretrain(config, tmp_path, progress=False)
    message = str(error.value)
    named = re.search(r"step (\d+).*(ckpt-(\d+)\.pt)", message)
    assert named, message
    last_good = tmp_path / "work" / named.group(2)
    assert int(named.group(3)) < int(named.group(1)) + 1 and last_good.exists()
    for path in tmp_path.glob("work/ckpt-*.pt"):  # every checkpoint on disk holds finite weights
        state = torch.load(path, weights_only=True)["state"]["model"]
        assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()), path
    assert not (tmp_path / "metrics.json").exists()


def test_cli_rejects_bad_config_before_training(tmp_path):
    result = run_cli({**TINY, "max_steps": 2, "framwork": "simclr"}, tmp_path / "bad")
    assert result.returncode == 1
    assert "framwork" in result.stderr and "did you mean framework" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("framework,start", [("barlow", 0.1), ("simclr", 0.0)])
def test_warm_up_starts_at_the_frameworks_fraction_of_the_peak_lr(tmp_path, framework, start):
    """Barlow Twins warms up from lr/10 as the authors' LinearLR; the others from 0; the peak is reached at the end
    of the warm-up. Biases and norms of Barlow Twins follow at x 0.024."""
    from cassle.apps.engine.trainer import Trainer

    config = resolve({**TINY, "framework": framework, "variant": "vanilla", "max_steps": 20, "warmup_epochs": 0.1})
    trainer = Trainer(config, tmp_path, progress=False)
    peak = config["base_lr"] * config["batch_size"] / 256
    warmup = trainer.schedule.warmup_steps
    assert warmup > 1
    lrs = [[group["lr"] / group["lr_multiplier"] for group in trainer.optimizer.param_groups]]
    for _ in range(warmup):
        trainer.scheduler.step()
    lrs.append([group["lr"] / group["lr_multiplier"] for group in trainer.optimizer.param_groups])
    assert lrs[0] == pytest.approx([start * peak] * len(lrs[0])) and lrs[1] == pytest.approx([peak] * len(lrs[1]))
    assert {group["lr_multiplier"] for group in trainer.optimizer.param_groups} == \
        ({1.0, 0.024} if framework == "barlow" else {1.0})
