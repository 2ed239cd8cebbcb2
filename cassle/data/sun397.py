"""SUN397 with its official partition 1 (Training_01.txt / Testing_01.txt).

The image dataset (torch, PIL) is imported where a split is loaded: the workflow plan checks roots without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.data.errors import LayoutError
from cassle.data.layout import Sample, Transform, count_lines, require
from cassle.data.splits import StratifiedCarve, stratified_indices

if TYPE_CHECKING:
    from cassle.data.folders import ImageFiles

PARTITION_FILES = {"trainval": "SUN397/Training_01.txt", "test": "SUN397/Testing_01.txt"}
CLASS_FILE = "SUN397/ClassName.txt"


def _read_list(path: Path) -> list[str]:
    with open(path) as handle:
        return [line.strip().lstrip("/") for line in handle if line.strip()]


@dataclass(frozen=True)
class Sun397Source:
    """`root/SUN397/{ClassName.txt, Training_01.txt, Testing_01.txt, <letter>/<class>/*.jpg}`.

    Classes follow ClassName.txt (`/a/abbey` -> label 0); test is Testing_01; train/val are a stratified carve
    of Training_01."""

    carve: StratifiedCarve

    def scan(self, root: Path, split_file: str) -> tuple[list[str], list[Sample]]:
        require(root, CLASS_FILE, *PARTITION_FILES.values())
        classes = _read_list(root / CLASS_FILE)
        index = {name: label for label, name in enumerate(classes)}
        samples = []
        for relpath in _read_list(root / split_file):
            folder = relpath.rsplit("/", 1)[0]
            if folder not in index:
                raise LayoutError(f"{root / split_file} lists an image of class /{folder}, absent from {CLASS_FILE}")
            samples.append((root / "SUN397" / relpath, index[folder]))
        return classes, samples

    def load(
        self, root: Path, split: str, transform: Transform | None = None, *, skip_corrupt: bool | None = None
    ) -> ImageFiles:
        from cassle.data.folders import ImageFiles

        classes, samples = self.scan(root, PARTITION_FILES["test" if split == "test" else "trainval"])
        if split != "test":
            samples = [samples[i] for i in stratified_indices(split, [label for _, label in samples], self.carve)]
        return ImageFiles(samples, classes, transform, skip_corrupt=skip_corrupt, name=f"{root} ({split})")

    def probe(self, root: Path) -> dict[str, int]:
        require(root, CLASS_FILE, *PARTITION_FILES.values())
        return {split: count_lines(root / relpath) for split, relpath in PARTITION_FILES.items()}

