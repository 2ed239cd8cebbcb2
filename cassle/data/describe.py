"""A dataset split as a run input: name, split, root, size and a fingerprint of its items computed from memory.

The digest never reads the data files (an ImageNet folder holds 1.3 M of them): it covers what the loaded dataset
holds in memory, which is what decides the items a run sees:

- class-folder datasets (`ImageFiles`): every sample's path relative to the split's common folder and its label;
- torchvision datasets (`VisionItems`): the items chosen (indices) and, where torchvision keeps the pixels in memory
  (CIFAR's `data` array), those pixels and targets; otherwise the items' file names where torchvision lists them;
- the generated `synthetic` dataset: its split, size, seed, label set and length, which fix every pixel.

Any other dataset has no digest (None).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from cassle.core.observe import DatasetUse
from cassle.data.folders import ImageFiles
from cassle.data.synthetic import SyntheticShapes
from cassle.data.vision_items import VisionItems

DIGEST_LENGTH = 16


def _update(digest: Any, *parts: object) -> None:
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")


def _fill(digest: Any, dataset: Dataset) -> bool:
    """Feed what identifies ``dataset``'s items into ``digest``; False when nothing cheap does."""
    if isinstance(dataset, Subset):
        _update(digest, "subset", list(dataset.indices))
        return _fill(digest, dataset.dataset)
    if isinstance(dataset, SyntheticShapes):
        _update(digest, "synthetic", dataset.split, dataset.size, dataset.seed, dataset.target, len(dataset))
        return True
    if isinstance(dataset, ImageFiles):
        paths = [os.fspath(path) for path, _ in dataset.samples]
        common = os.path.commonpath(paths) if paths else ""
        for path, target in dataset.samples:
            _update(digest, os.path.relpath(os.fspath(path), common), target)
        return True
    if isinstance(dataset, VisionItems):
        base = dataset.base
        _update(digest, type(base).__name__, dataset.indices)
        data = getattr(base, "data", None)
        if isinstance(data, np.ndarray):
            digest.update(np.ascontiguousarray(data).data)
            _update(digest, list(getattr(base, "targets", [])))
            return True
        files = getattr(base, "samples", None) or getattr(base, "imgs", None)
        if isinstance(files, list):
            _update(digest, [(Path(str(path)).name, target) for path, target in files])
            return True
    return False


def dataset_digest(dataset: Dataset) -> str | None:
    """A sha256 fingerprint (16 hex digits) of the items of ``dataset`` (module docstring), or None."""
    digest = hashlib.sha256()
    return digest.hexdigest()[:DIGEST_LENGTH] if _fill(digest, dataset) else None


def describe_dataset(dataset: Dataset, name: str, split: str, root: Path | str | None, context: str) -> DatasetUse:
    """The run input for split ``split`` of dataset ``name`` (read from ``root``) used as ``context``."""
    return DatasetUse(name=name, split=split, root=None if root is None else str(Path(root).expanduser().resolve()),
                      size=len(dataset), digest=dataset_digest(dataset), context=context)
