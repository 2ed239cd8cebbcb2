"""Files on disk: layout checks, class-folder scanning, decoding images with clear errors, skipping corrupt ones."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from cassle.data.errors import SKIP_CORRUPT_VARIABLE, CorruptImageError, LayoutError

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


def open_rgb(path: Path | str) -> Image.Image:
    """Decode an image file to an RGB PIL image; unreadable files raise `CorruptImageError` naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptImageError(path, error) from error


def load_sample(sample: Sample) -> tuple[Image.Image, Any]:
    """(RGB image, target) of a (path, target) sample."""
    return open_rgb(sample[0]), sample[1]


def _problem(path: Path) -> str | None:
    try:
        open_rgb(path)
    except CorruptImageError as error:
        return str(error.__cause__)
    return None


def skip_corrupt_from_environment() -> bool:
    """Whether the user allows skipping unreadable images: the CASSLE_SKIP_CORRUPT environment variable (unset: no).

    An environment variable reaches every job (`cassle pretrain`, `cassle eval`, Snakemake and Slurm jobs) without
    changing a command line, and skipping never changes a finished result: a dataset either has no unreadable
    image (skipping changes nothing) or cannot be used without skipping.
    """
    text = os.environ.get(SKIP_CORRUPT_VARIABLE, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{SKIP_CORRUPT_VARIABLE}={os.environ[SKIP_CORRUPT_VARIABLE]!r} is not a yes/no value; "
                     "expected 1, true, yes or on (skip unreadable images) or 0, false, no, off or unset")


def drop_corrupt(samples: Sequence[Sample], dataset: str) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Decode every image (a full pass over the files), keep the readable ones and warn about the others."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(_problem, [path for path, _ in samples]))
    kept = [sample for sample, problem in zip(samples, problems) if problem is None]
    skipped = [(sample[0], problem) for sample, problem in zip(samples, problems) if problem is not None]
    if skipped:
        listing = "\n".join(f"  {path}: {problem}" for path, problem in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"{dataset}: skipped {len(skipped)} unreadable image(s):\n{listing}{more}", stacklevel=2)
    return kept, skipped


class ImageFiles(Dataset):
    """(image, target) items read from a list of files: RGB PIL images, or `transform(image)` when given.

    `load_image` decodes one sample (default: `load_sample`, the RGB image of the path); `skip_corrupt=True`
    decodes every file once up front, warns about the unreadable ones and leaves them out (listed in `.skipped`);
    `skip_corrupt=None` reads the choice from the environment (`skip_corrupt_from_environment`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        transform: Transform | None = None,
        *,
        skip_corrupt: bool | None = None,
        name: str = "dataset",
        load_image: Callable[[Sample], tuple[Image.Image, Any]] | None = None,
    ) -> None:
        self.classes = list(classes)
        self.transform = transform
        self.load_image = load_image or load_sample
        if skip_corrupt is None:
            skip_corrupt = skip_corrupt_from_environment()
        self.samples, self.skipped = drop_corrupt(samples, name) if skip_corrupt else (list(samples), [])

    @property
    def targets(self) -> list[Any]:
        return [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.load_image(self.samples[index])
        return (self.transform(image) if self.transform is not None else image), target


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
