"""torchvision datasets as (RGB image, target) items, with unreadable images named in the error."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision.datasets import Caltech101

from cassle.data.errors import CorruptImageError
from cassle.data.layout import Transform


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
