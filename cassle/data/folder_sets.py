"""Datasets stored as class folders: `root/train/<class>/*`, `root/<test dir>/<class>/*`, maybe `root/val/<class>/*`.

The image dataset (torch, PIL) is imported where a split is loaded: the workflow plan checks roots without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.data.errors import LayoutError
from cassle.data.layout import Sample, Transform, relabel, scan_class_folders
from cassle.data.splits import RandomCarve, StratifiedCarve, pool_indices, stratified_indices

if TYPE_CHECKING:
    from cassle.data.folders import ImageFiles


@dataclass(frozen=True)
class FolderSource:
    """Splits of a class-folder dataset.

    `classes` fixes the class folders and their label order (other folders are ignored); without it the
    sub-folders of `train/` are the classes, sorted by name, and `num_classes`, when set, must match.
    Our `test` split is the `test_dir` folder. With a `val_dir` folder on disk, train/val are the official
    folders; otherwise `carve` carves val out of `train/`.
    """

    carve: RandomCarve | StratifiedCarve
    classes: tuple[str, ...] | None = None
    num_classes: int | None = None
    test_dir: str = "test"
    val_dir: str | None = None

    def scan(self, root: Path) -> tuple[list[str], dict[str, list[Sample]]]:
        """(classes, {official folder split: samples}) without decoding any image."""
        classes, train = scan_class_folders(root / "train", self.classes)
        if self.num_classes is not None and len(classes) != self.num_classes:
            raise LayoutError(f"{root / 'train'} has {len(classes)} class folders, expected {self.num_classes}")
        official = {"train": train, "test": self._scan_other(root / self.test_dir, classes)}
        if self.val_dir is not None and (root / self.val_dir).is_dir():
            official["val"] = self._scan_other(root / self.val_dir, classes)
        return classes, official

    def _scan_other(self, split_dir: Path, classes: list[str]) -> list[Sample]:
        if self.classes is not None:
            return scan_class_folders(split_dir, self.classes)[1]
        own, samples = scan_class_folders(split_dir)
        return relabel(samples, own, classes, split_dir)

    def load(
        self,
        root: Path,
        split: str,
        transform: Transform | None = None,
        *,
        skip_corrupt: bool | None = None,
    ) -> ImageFiles:
        from cassle.data.folders import ImageFiles

        classes, official = self.scan(root)
        if split == "test":
            samples = official["test"]
        elif "val" in official:
            samples = official["train"] + official["val"] if split == "trainval" else official[split]
        else:
            pool = official["train"]
            if isinstance(self.carve, RandomCarve):
                indices = pool_indices(split, len(pool), self.carve)
            else:
                indices = stratified_indices(split, [label for _, label in pool], self.carve)
            samples = [pool[i] for i in indices]
        return ImageFiles(samples, classes, transform, skip_corrupt=skip_corrupt, name=f"{root} ({split})")

    def probe(self, root: Path) -> dict[str, int]:
        """Number of image files per folder split (files are listed, not decoded)."""
        return {split: len(samples) for split, samples in self.scan(root)[1].items()}
