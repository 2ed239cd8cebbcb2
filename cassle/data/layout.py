"""Files on disk without decoding them: layout checks, annotation-file counts, class-folder scanning.

Plain Python (no torch, no PIL): `DatasetSpec.check_root` and the workflow plan use it (decoding: folders.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cassle.data.errors import LayoutError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Sample = tuple[Path, Any]
Transform = Callable[[Any], Any]


def require(root: Path, *relpaths: str) -> None:
    """Fail with a `LayoutError` naming the first of `relpaths` (relative to `root`) that does not exist."""
    for relpath in relpaths:
        if not (root / relpath).exists():
            raise LayoutError(f"missing {root / relpath}")


def count_lines(path: Path) -> int:
    """Number of non-empty lines of an annotation file that lists one image per line."""
    with open(path) as handle:
        return sum(1 for line in handle if line.strip())


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension, hidden files ignored), sorted by name."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    return [folder / name for name in sorted(names)]


def list_subfolders(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of `folder`, sorted."""
    if not folder.is_dir():
        raise LayoutError(f"missing folder {folder}")
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(split_dir: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[Sample]]:
    """(classes, [(path, label), ...]) of `split_dir/<class>/*`, labels in `classes` order.

    With `classes=None` every sub-folder is a class (sorted by name); otherwise each listed class folder must
    exist and other folders are ignored. An empty class folder is an error that names it.
    """
    found = list_subfolders(split_dir)
    if classes is None:
        classes = found
        if not classes:
            raise LayoutError(f"{split_dir} holds no class folders")
    else:
        missing = sorted(set(classes) - set(found))
        if missing:
            raise LayoutError(f"{split_dir} lacks {len(missing)} class folder(s): {_preview(missing)}")
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        files = list_images(split_dir / name)
        if not files:
            raise LayoutError(f"class folder {split_dir / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, label) for path in files]
    return list(classes), samples


def relabel(samples: Sequence[Sample], own: Sequence[str], reference: Sequence[str], where: Path) -> list[Sample]:
    """Map labels indexing `own` class names onto `reference` (e.g. test folders onto the train classes)."""
    unknown = sorted(set(own) - set(reference))
    if unknown:
        raise LayoutError(f"{where} has class folders absent from the training split: {_preview(unknown)}")
    index = {name: i for i, name in enumerate(reference)}
    return [(path, index[own[label]]) for path, label in samples]


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
