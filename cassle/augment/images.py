"""Input batches: a uint8/float ``N x 3 x H x W`` tensor, or a list of ``3 x H x W`` images of different sizes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Images = Tensor | Sequence[Tensor]


def image_sizes(images: Images) -> Tensor:
    """``N x 2`` int64 (height, width) of a batch tensor or a list of images; validates the input."""
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty N x 3 x H x W tensor, got shape {tuple(images.shape)}")
        _check_dtype(images.dtype)
        return torch.tensor([images.shape[2:]], dtype=torch.int64).expand(images.shape[0], 2)
    images = list(images)
    if not images or any(not isinstance(im, Tensor) or im.ndim != 3 or im.shape[0] != 3 for im in images):
        shapes = [tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__ for im in images]
        raise ValueError(f"images must be a non-empty list of 3 x H x W tensors, got {shapes}")
    if len({(im.dtype, im.device) for im in images}) > 1:
        raise ValueError("images in a list must share one dtype and one device")
    _check_dtype(images[0].dtype)
    return torch.tensor([im.shape[1:] for im in images], dtype=torch.int64)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise ValueError(f"images must be uint8 (0..255) or floating point (0..1), got dtype {dtype}")


def to_float(images: Tensor) -> Tensor:
    """float32 in [0, 1] (uint8 divided by 255; float32 input is returned as is, never modified)."""
    x = images.to(torch.float32)
    return x.div_(255.0) if images.dtype == torch.uint8 else x


def pack_crops(images: Sequence[Tensor], boxes: Tensor) -> Tensor:
    """The crop regions ``boxes`` (``N x 4`` top, left, height, width) of differently sized images, as one
    float32 ``N x 3 x max(height) x max(width)`` tensor in [0, 1], each top-left aligned and zero-padded."""
    height, width = (int(v) for v in boxes[:, 2:].amax(dim=0))
    out = torch.empty(len(images), 3, height, width, dtype=torch.float32, device=images[0].device)
    scale = 255.0 if images[0].dtype == torch.uint8 else 1.0
    for i, (im, (top, left, h, w)) in enumerate(zip(images, boxes.tolist())):  # input marshalling only
        torch.div(im[:, top : top + h, left : left + w], scale, out=out[i, :, :h, :w])
        out[i, :, h:].zero_()  # padding is never sampled, but it must be finite (0 * NaN = NaN)
        out[i, :, :h, w:].zero_()
    return out
