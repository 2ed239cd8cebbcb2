"""`cassle eval rotation` (paper Table 7): predict the rotation (0/90/180/270 degrees) of an image with the linear
protocol on frozen features.

Every image of a split appears at all four angles (labels 0..3 = 0, 90, 180, 270 degrees counter-clockwise), so
the classes are balanced per image; the authors instead rotated a whole batch by one random angle from
{-90, 0, 90, 180}, which does not balance the classes. Rotations are exact (`torch.rot90` of the square,
centre-cropped image, before normalisation). The probe is `linear_probe` with metric top1, train/val/test as the
dataset defines them (refit on train + val).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.features import feature_options, split_features
from cassle.evaluate.linear import linear_probe

ANGLES: tuple[int, ...] = (0, 90, 180, 270)
SPLITS = ("train", "val", "test")


class Rotations(Dataset):
    """Item `4 i + k` is image `i` of `base` (a C x H x W tensor, or crops x C x H x W) rotated by k * 90 degrees
    counter-clockwise, with label k. The last base image is kept, so in-order reading loads each image once."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self._last: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(ANGLES) * len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} rotated images")
        image_index, k = divmod(index, len(ANGLES))
        if self._last is None or self._last[0] != image_index:
            self._last = (image_index, self.base[image_index][0])
        image = self._last[1]
        if image.shape[-1] != image.shape[-2]:
            raise ValueError(f"rotation needs square images, got {tuple(image.shape[-2:])}; use a centre crop")
        return torch.rot90(image, k, dims=(-2, -1)), k


def run(args: argparse.Namespace) -> int:
    """Extract features of every rotated image of train/val/test, run the linear protocol, write metrics.json."""
    backbone, info, device = backbone_from_args(args)
    options = feature_options(args, device)
    splits = {split: split_features(backbone, info, args.dataset, split, args.out, wrap=Rotations, tag="rotation",
                                    **options) for split in SPLITS}
    result = linear_probe(splits["train"], splits["val"], splits["test"], "top1", penalties=args.penalties,
                          device=device, progress=not args.quiet)
    metrics: dict[str, Any] = {"top1": result["test"], "chance": 1 / len(ANGLES),
                               **{key: result[key] for key in ("penalty", "penalties", "val_scores", "sizes", "dim")}}
    path = write_eval_metrics(args, "rotation", metrics, info, {"angles": list(ANGLES), "penalties": args.penalties})
    print(f"rotation prediction on {args.dataset}: top1 {100 * result['test']:.2f}% -> {path}")
    return 0
