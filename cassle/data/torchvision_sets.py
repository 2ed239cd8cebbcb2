"""Datasets read through torchvision's classes (always with download=False), mapped onto our splits."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision.datasets import Caltech101

from cassle.data.errors import CorruptImageError, LayoutError
from cassle.data.folders import Transform, count_lines, require
from cassle.data.splits import RandomCarve, StratifiedCarve, pool_indices, stratified_indices


def image_file(dataset: Dataset, item: int) -> str:
    """The image file behind item `item` of a torchvision dataset (from its file list), for error messages; a
    description of the item when the dataset keeps no such list."""
    if isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, item)
        return image_file(dataset.datasets[part], item - (dataset.cumulative_sizes[part - 1] if part else 0))
    for attribute in ("_image_files", "_images", "images"):  # Food101, Flowers102, DTD, Aircraft; Pets; VOC
        files = getattr(dataset, attribute, None)
        if isinstance(files, Sequence):
            return str(files[item])
    if isinstance(getattr(dataset, "_samples", None), Sequence):  # StanfordCars: (path, target) pairs
        return str(dataset._samples[item][0])
    if isinstance(dataset, Caltech101):  # builds the path in __getitem__, as here
        category = dataset.categories[dataset.y[item]]
        return os.path.join(dataset.root, "101_ObjectCategories", category, f"image_{dataset.index[item]:04d}.jpg")
    return f"item {item} of {type(dataset).__name__}"


class VisionItems(Dataset):
    """(image, target) items of a torchvision dataset, optionally restricted to `indices`.

    Images come back as RGB PIL images (grayscale Caltech images included), or `transform(image)` when given;
    `target_transform` maps raw targets (e.g. VOC annotation dicts to box tensors).
    """

    def __init__(
        self,
        base: Dataset,
        classes: Sequence[str],
        indices: Sequence[int] | None = None,
        transform: Transform | None = None,
        target_transform: Transform | None = None,
    ) -> None:
        self.base, self.classes = base, list(classes)
        self.transform, self.target_transform = transform, target_transform
        self.indices = list(range(len(base))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        item = self.indices[index]
        try:
            image, target = self.base[item]
            image = image.convert("RGB")  # some datasets (Caltech101) open lazily: decoding happens here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise CorruptImageError(image_file(self.base, item), error) from error
        if self.target_transform is not None:
            target = self.target_transform(target)
        return (self.transform(image) if self.transform is not None else image), target


@dataclass(frozen=True)
class TorchvisionSource:
    """How one torchvision dataset class provides our splits.

    `official` maps split names to constructor keyword arguments: our splits served directly, plus `pool`, the
    official set that `carve` divides into train/val (RandomCarve: test is official; StratifiedCarve: test is
    what the carve leaves over). Without a carve, `trainval` is train + val unless `official` lists it.
    `required` paths are checked first so that a missing root gets our error, not torchvision's.
    """

    factory: Callable[..., Dataset]
    required: tuple[str, ...]
    official: Mapping[str, Mapping[str, Any]]
    carve: RandomCarve | StratifiedCarve | None = None
    counted: Mapping[str, str] = field(default_factory=dict)
    classes_attr: str = "classes"
    targets_attr: str = "targets"

    def open(self, root: Path, official_split: str) -> Dataset:
        """The torchvision dataset of one official split; its own errors become `LayoutError`s."""
        try:
            return self.factory(root, download=False, **self.official[official_split])
        except RuntimeError as error:
            reason = str(error).split(" You can use download=True")[0]  # we never download
            raise LayoutError(f"torchvision {self.factory.__name__} cannot read it: {reason}") from error

    def load(self, root: Path, split: str, transform: Transform | None = None) -> VisionItems:
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
