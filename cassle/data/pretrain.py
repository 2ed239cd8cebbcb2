"""Raw uint8 images for pretraining (augmented later on the device) and a collate for mixed image sizes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cassle.data.registry import get_dataset, list_datasets


class ToUint8Tensor:
    """PIL image or uint8 tensor -> uint8 tensor [3, H, W], resized (bilinear, antialiased) so that the shorter
    side is `size` when `size` is set and differs."""

    def __init__(self, size: int | None = None) -> None:
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int (shorter image side in pixels) or None, got {size!r}")
        self.size = size

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        tensor = image if isinstance(image, torch.Tensor) else TF.pil_to_tensor(image)
        if self.size is not None and min(tensor.shape[-2:]) != self.size:
            tensor = TF.resize(tensor, self.size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        return tensor

    def __repr__(self) -> str:
        return f"ToUint8Tensor(size={self.size})"


def load_pretrain(name: str, root: Path | str | None, size: int | None = None, **options: Any) -> Dataset:
    """The pretraining split of dataset `name` as (uint8 tensor [3, H, W], label) items.

    Images are decoded and, with `size`, resized so that their shorter side is `size` (datasets that render
    images, like `synthetic`, draw them at that size directly). `options` go to the dataset's loader.
    """
    spec = get_dataset(name)
    if spec.pretrain_split is None:
        choices = ", ".join(list_datasets("pretrain"))
        raise ValueError(f"dataset '{name}' is not for pretraining; choose one of {choices}")
    native = {"as_pil": False, **({} if size is None else {"size": size})}
    native = {key: value for key, value in native.items() if key in spec.options}
    transform = ToUint8Tensor(None if "size" in native else size)
    return spec.load(root, spec.pretrain_split, transform, **native, **options)


def collate_images(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """(images, labels) of a batch: images stacked [B, 3, H, W] when they all have one shape, else a list."""
    images = [image for image, _ in batch]
    labels = [label for _, label in batch]
    same = all(image.shape == images[0].shape for image in images)
    stacked_labels = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return (torch.stack(images) if same else images), stacked_labels
