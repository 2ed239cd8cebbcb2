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


def value_scale(images: Images) -> float:
    """The factor from the images' values to [0, 1]: 1/255 for uint8, else 1."""
    dtype = images.dtype if isinstance(images, Tensor) else images[0].dtype
    return 1.0 / 255.0 if dtype == torch.uint8 else 1.0


def load_sources(images: Images, idx: Tensor, crop: Tensor, min_size: tuple[int, int] = (1, 1)) -> tuple[Tensor, float]:
    """The sources of samples ``idx`` (crop boxes ``crop``: ``M x 4`` top, left, height, width) as one float32
    ``M x 3 x H x W`` tensor, unscaled, and the scale to [0, 1] (1/255 for uint8 images, left to the resize).

    A batch tensor: the whole images. A list: each image's crop region only, top-left aligned in one zero-padded
    tensor of at least ``min_size`` (a loop over images, input marshalling only).
    """
    if isinstance(images, Tensor):
        src = images.index_select(0, idx).to(torch.float32)
    else:
        height, width = (max(int(v), m) for v, m in zip(crop[:, 2:].amax(dim=0), min_size))
        src = torch.empty(len(idx), 3, height, width, dtype=torch.float32, device=images[0].device)
        for i, (k, (top, left, h, w)) in enumerate(zip(idx.tolist(), crop.tolist())):
            src[i, :, :h, :w] = images[k][:, top : top + h, left : left + w]
            src[i, :, h:].zero_()  # padding weighs 0 when read, but must be finite (0 * NaN = NaN)
            src[i, :, :h, w:].zero_()
    return src, value_scale(images)
