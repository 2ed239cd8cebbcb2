"""Datasets read through torchvision's classes (always with download=False), mapped onto our splits.

torch and torchvision are imported where a split is loaded: the workflow plan checks roots without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassle.data.errors import LayoutError
from cassle.data.layout import Transform, count_lines, require
from cassle.data.splits import RandomCarve, StratifiedCarve, pool_indices, stratified_indices

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from cassle.data.vision_items import VisionItems


@dataclass(frozen=True)
class TorchvisionSource:
    """How one torchvision dataset class, `class_name` of `torchvision.datasets`, provides our splits.

    `official` maps split names to constructor keyword arguments: our splits served directly, plus `pool`, the
    official set that `carve` divides into train/val (RandomCarve: test is official; StratifiedCarve: test is
    what the carve leaves over). Without a carve, `trainval` is train + val unless `official` lists it.
    `required` paths are checked first so that a missing root gets our error, not torchvision's.
    """

    class_name: str
    required: tuple[str, ...]
    official: Mapping[str, Mapping[str, Any]]
    carve: RandomCarve | StratifiedCarve | None = None
    counted: Mapping[str, str] = field(default_factory=dict)
    classes_attr: str = "classes"
    targets_attr: str = "targets"

    def open(self, root: Path, official_split: str) -> Dataset:
        """The torchvision dataset of one official split; its own errors become `LayoutError`s."""
        from torchvision import datasets

        try:
            return getattr(datasets, self.class_name)(root, download=False, **self.official[official_split])
        except RuntimeError as error:
            reason = str(error).split(" You can use download=True")[0]  # we never download
            raise LayoutError(f"torchvision {self.class_name} cannot read it: {reason}") from error

    def load(self, root: Path, split: str, transform: Transform | None = None) -> VisionItems:
        from torch.utils.data import ConcatDataset

        from cassle.data.vision_items import VisionItems

        require(root, *self.required)
        indices = None
        if split in self.official:
            base = self.open(root, split)
        elif isinstance(self.carve, RandomCarve):
            base = self.open(root, "pool")
            indices = pool_indices(split, len(base), self.carve)
        elif isinstance(self.carve, StratifiedCarve):
            base = self.open(root, "pool")
            indices = stratified_indices(split, getattr(base, self.targets_attr), self.carve)
        else:
            parts = [self.open(root, "train"), self.open(root, "val")]
            return VisionItems(ConcatDataset(parts), getattr(parts[0], self.classes_attr), transform=transform)
        return VisionItems(base, getattr(base, self.classes_attr), indices, transform)

    def probe(self, root: Path) -> dict[str, int]:
        """Check the required paths; count images per split from annotation files where there are such."""
        require(root, *self.required)
        return {split: count_lines(root / relpath) for split, relpath in self.counted.items()}
