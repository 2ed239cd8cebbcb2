"""Images on disk as datasets: decoding with clear errors, skipping corrupt ones (listing files: layout.py)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from cassle.data.errors import SKIP_CORRUPT_VARIABLE, CorruptImageError
from cassle.data.layout import Sample, Transform


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
