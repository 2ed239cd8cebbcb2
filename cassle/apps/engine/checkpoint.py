"""Atomic, checksummed training checkpoints with fallback to the last good one.

Layout of a work folder::

    ckpt-<step>.pt          torch.save of {"format", "step", "config_hash", "state"}, written atomically
    ckpt-<step>.pt.sha256   "<sha256 hex>  ckpt-<step>.pt", written (atomically) after the checkpoint

The sidecar is ``sha256sum -c`` compatible and acts as the commit marker: a checkpoint without one (the
process died between the two writes) is not trusted. ``state`` is whatever dict the training loop
builds; it must hold only tensors, containers and plain values because loading uses
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cassle.core.io import PathLike, atomic_torch_save, atomic_write_text, file_sha256

FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d+)\.pt")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is truncated, corrupted or has no checksum."""


class ConfigMismatchError(ValueError):
    """The work folder holds checkpoints of a different experiment (another config hash)."""


def unwrap_model(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` of the unwrapped module: keys never carry a DDP ``module.`` or compile prefix."""
    return unwrap_model(module).state_dict()


def load_model_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a ``model_state`` into ``module`` (wrapped or not), strictly."""
    unwrap_model(module).load_state_dict(state, strict=True)


class CheckpointManager:
    """Save, prune and load ``ckpt-<step>.pt`` files in ``work_dir``.

    ``config_hash`` (the current experiment's) is stored in every checkpoint and, when given, a newest
    valid checkpoint with a different hash makes ``load_latest`` raise ``ConfigMismatchError``.
    """

    def __init__(self, work_dir: PathLike, keep: int = 2, config_hash: str | None = None) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"CheckpointManager: keep={keep!r}; it must be an integer >= 1")
        self.work_dir = Path(work_dir)
        self.keep = keep
        self.config_hash = config_hash

    def path(self, step: int) -> Path:
        """File of the checkpoint at ``step``."""
        return self.work_dir / f"ckpt-{step}.pt"

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    def _steps(self) -> list[int]:
        """Steps of every ``ckpt-<step>.pt`` present (committed or not), newest first."""
        if not self.work_dir.is_dir():
            return []
        found = (_NAME.fullmatch(p.name) for p in self.work_dir.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def _committed(self, step: int) -> bool:
        return self._sidecar(self.path(step)).exists()

    def latest_step(self) -> int | None:
        """Step of the newest checkpoint with a checksum sidecar (not re-verified; see ``load_latest``)."""
        return next((step for step in self._steps() if self._committed(step)), None)

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Write the checkpoint of ``step`` and its checksum, then prune; returns the checkpoint's path.

        Checkpoints of later steps are deleted first: saving ``step`` means training went on from an
        earlier point (after a fallback), so those belong to an abandoned continuation.
        """
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"CheckpointManager.save: step={step!r}; it must be an integer >= 0")
        for later in (s for s in self._steps() if s > step):
            self._delete(later)
        path = self.path(step)
        record = {"format": FORMAT_VERSION, "step": step, "config_hash": self.config_hash, "state": state}
        atomic_torch_save(record, path)
        atomic_write_text(self._sidecar(path), f"{file_sha256(path)}  {path.name}\n")
        self._prune()
        return path

    def _delete(self, step: int) -> None:
        path = self.path(step)
        self._sidecar(path).unlink(missing_ok=True)  # uncommit first
        path.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Keep the ``keep`` newest committed checkpoints; delete older ones and leftover temp files."""
        committed = [step for step in self._steps() if self._committed(step)]
        if committed:
            oldest_kept = committed[: self.keep][-1]
            for step in self._steps():
                if step < oldest_kept:
                    self._delete(step)
        for tmp in self.work_dir.glob(".ckpt-*.tmp"):
            tmp.unlink(missing_ok=True)

    def _problem(self, path: Path, data: bytes) -> str | None:
        """Why the bytes of ``path`` cannot be trusted, or None when they match the sidecar."""
        sidecar = self._sidecar(path)
        if not sidecar.exists():
            return f"it has no checksum file {sidecar.name} (the save was interrupted)"
        recorded = sidecar.read_bytes().decode("ascii", errors="replace").partition(" ")[0]
        actual = hashlib.sha256(data).hexdigest()
        if recorded != actual:
            return f"its sha256 {actual[:12]}... does not match {sidecar.name} (truncated or corrupted)"
        return None

    def load_latest(self, map_location: Any = "cpu") -> tuple[dict[str, Any], int] | None:
        """``(state, step)`` of the newest checkpoint whose checksum verifies, or None when there is none.

        Each newer bad checkpoint is skipped with a ``CheckpointWarning`` naming the file, why it is bad and the
        checkpoint used instead. Raises ``ConfigMismatchError`` when the checkpoint was written for another config
        hash, and ``RuntimeError`` when committed checkpoints exist but none verifies (nothing is silently
        restarted). Only uncommitted ones (a first save interrupted before its checksum) mean: start over.
        """
        skipped: list[tuple[Path, str]] = []
        for step in self._steps():
            path = self.path(step)
            data = path.read_bytes()
            problem = self._problem(path, data)
            if problem is None:
                self._warn_skipped(skipped, f"falling back to {path} (step {step})")
                record = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
                self._check_record(path, record, step)
                return record["state"], step
            skipped.append((path, problem))
        if skipped and all(not self._sidecar(path).exists() for path, _ in skipped):
            self._warn_skipped(skipped, "none was ever committed, so training starts over")
            return None
        if skipped:
            self._warn_skipped(skipped, "no valid checkpoint is left")
            listing = "; ".join(f"{path} ({problem})" for path, problem in skipped)
            raise RuntimeError(f"no valid checkpoint in {self.work_dir}: {listing}. "
                               "Delete these files to start training over")
        return None

    @staticmethod
    def _warn_skipped(skipped: list[tuple[Path, str]], outcome: str) -> None:
        for path, problem in skipped:
            warnings.warn(f"skipping checkpoint {path}: {problem}; {outcome}", CheckpointWarning, stacklevel=3)

    def _check_record(self, path: Path, record: Any, step: int) -> None:
        if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION or record.get("step") != step:
            raise ValueError(
                f"{path} is not a cassle checkpoint of format {FORMAT_VERSION} for step {step}; "
                "it was written by other code: move it out of the work folder"
            )
        saved = record["config_hash"]
        if self.config_hash is not None and saved is not None and saved != self.config_hash:
            raise ConfigMismatchError(
                f"{path} was written for config hash {saved}, but the current config hashes to "
                f"{self.config_hash}: the work folder {self.work_dir} belongs to a different experiment. "
                "Use a new output folder (--out) or delete the work folder to start over"
            )
