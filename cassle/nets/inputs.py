"""Input normalisation: kept out of the backbone so exported weights stay plain torchvision weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The authors' STL-10 statistics (used for STL-10 pretraining and its downstream transform).
STL10_MEAN: tuple[float, float, float] = (0.43, 0.42, 0.39)
STL10_STD: tuple[float, float, float] = (0.27, 0.26, 0.27)


def input_statistics(pretrain_dataset: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a backbone pretrained on `pretrain_dataset` expects: the authors' STL-10 statistics for STL-10,
    ImageNet's for every other dataset and for external checkpoints (None)."""
    return (STL10_MEAN, STL10_STD) if pretrain_dataset == "stl10" else (IMAGENET_MEAN, IMAGENET_STD)


class Normalize(nn.Module):
    """Per-channel `(x - mean) / std` for B x C x H x W images in [0, 1].

    The statistics are non-persistent buffers: they follow `.to(device)` but stay out of state dicts.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(
                f"Normalize needs one mean and one std per channel, got mean={tuple(mean)} and std={tuple(std)}"
            )
        if min(std) <= 0:
            raise ValueError(f"Normalize std must be positive, got std={tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects B x {self.mean.shape[1]} x H x W images, got shape {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
