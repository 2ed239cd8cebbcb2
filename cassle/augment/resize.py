"""Crop, resize and flip batches of images with per-sample boxes: torchvision's bilinear resize, antialiased or not.

Per axis, the sampling is described once per batch (``bilinear_positions``, ``antialias_taps``) and applied to
float32 sources ``N x 3 x H x W`` (``images.load_sources``) by ``bilinear_crop`` or ``antialiased_crop``;
``scale`` multiplies the result (1/255 for uint8 sources converted to float unscaled: cheaper on the output, or
free in the resampling weights). The CPU kernel (``cassle.augment.fused``) takes the same sampling as taps
(``bilinear_taps``, ``antialias_taps``).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


def needs_antialias(height: Tensor, width: Tensor, size: int, antialias: bool) -> Tensor:
    """Per sample: whether torchvision's antialiased resize differs from plain bilinear (a downscale on an axis)."""
    downscale = torch.maximum(height, width) > size
    return downscale if antialias else torch.zeros_like(downscale)


def bilinear_positions(start: Tensor, length: Tensor, size: int, mirror: Tensor | None = None) -> Tensor:
    """Source pixel coordinates ``N x size`` of a bilinear resize (align_corners=False) of the boxes
    ``[start, start + length)`` along one axis, clamped to the box (so that padding around it is never read),
    reversed where ``mirror``."""
    u = (torch.arange(size, dtype=torch.float32, device=start.device) + 0.5) / size
    if mirror is not None:
        u = torch.where(mirror.unsqueeze(1), 1.0 - u, u)
    first, length = start.to(torch.float32).unsqueeze(1), length.to(torch.float32).unsqueeze(1)
    return torch.minimum(torch.maximum(first + u * length - 0.5, first), first + length - 1.0)


def bilinear_taps(positions: Tensor, end: Tensor) -> tuple[Tensor, Tensor]:
    """The two taps (source indices and weights, ``N x size x 2``) of bilinear sampling at ``positions``
    (``bilinear_positions``), indices kept below ``end`` (``N``; the second tap weighs 0 where it would reach it)."""
    first = positions.floor()
    frac = positions - first
    second = torch.minimum(first + 1.0, end.to(first.dtype).unsqueeze(1) - 1.0)
    return torch.stack((first, second), dim=2).to(torch.int64), torch.stack((1.0 - frac, frac), dim=2)


def bilinear_crop(src: Tensor, x: Tensor, y: Tensor, scale: float = 1.0) -> Tensor:
    """Views ``N x 3 x S x S`` sampled bilinearly from ``src`` at columns ``x`` and rows ``y`` (``N x S`` source
    pixel coordinates, ``bilinear_positions``): torchvision's ``resized_crop`` with ``antialias=False``, equal to its
    antialiased resize where no axis is downscaled. One ``grid_sample``."""
    n, _, height, width = src.shape
    size = x.shape[1]
    gx = x.mul(2.0 / max(width - 1, 1)).sub_(1.0).unsqueeze(1).expand(n, size, size)
    gy = y.mul(2.0 / max(height - 1, 1)).sub_(1.0).unsqueeze(2).expand(n, size, size)
    out = F.grid_sample(src, torch.stack((gx, gy), dim=-1), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out if scale == 1.0 else out.mul_(scale)


def antialias_tap_count(length: Tensor, size: int) -> int:
    """Taps per output pixel that cover torchvision's antialiased resize of boxes of these lengths to ``size``."""
    return int(math.ceil(2.0 * max(float(length.max()) / size, 1.0))) + 1 if length.numel() else 1


def antialias_taps(start: Tensor, length: Tensor, limit: Tensor, size: int, taps: int,
                   mirror: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Source indices ``start + j`` and weights (``N x size x taps``) of torchvision's antialiased bilinear resize
    of the boxes ``[start, start + length)`` along one axis (``_compute_indices_weights_aa``), reversed where
    ``mirror``.

    Output pixel i is centred at ``c = s (i + 0.5)`` (s = length / size) and weighs the box pixels ``j`` in
    ``[trunc(c - r + 0.5), trunc(c + r + 0.5))`` (r = max(s, 1)) by the triangle ``1 - |j + 0.5 - c| / r``,
    normalised. Each output pixel reads ``taps`` consecutive pixels ``j`` (``antialias_tap_count``), moved left
    where they would reach ``limit`` (the box-relative end of the readable source); those outside the triangle
    weigh 0, and indices below 0 (a source shorter than ``taps``) are clamped to 0.
    """
    dev = start.device
    length, limit = length.to(torch.float64).unsqueeze(1), limit.to(torch.float64).unsqueeze(1)
    ratio = length / size
    radius = ratio.clamp_min(1.0)
    centre = ratio * (torch.arange(size, dtype=torch.float64, device=dev) + 0.5)
    first = (centre - radius + 0.5).trunc_().clamp_min_(0.0)
    stop = torch.minimum((centre + radius + 0.5).trunc_(), length)
    j = torch.minimum(first, limit - taps).unsqueeze(2) + torch.arange(taps, dtype=torch.float64, device=dev)
    weight = (1.0 - (j + 0.5 - centre.unsqueeze(2)).abs_() / radius.unsqueeze(2)).clamp_min_(0.0)
    weight = torch.where((j >= first.unsqueeze(2)) & (j < stop.unsqueeze(2)), weight, 0.0)
    weight = (weight / weight.sum(dim=2, keepdim=True)).to(torch.float32)
    index = (j.to(torch.int64) + start.to(torch.int64).view(-1, 1, 1)).clamp_min_(0)
    if mirror is not None:
        flipped = mirror.view(-1, 1, 1)
        index, weight = torch.where(flipped, index.flip(1), index), torch.where(flipped, weight.flip(1), weight)
    return index, weight


def antialiased_crop(src: Tensor, x: tuple[Tensor, Tensor], y: tuple[Tensor, Tensor], scale: float = 1.0) -> Tensor:
    """Views ``N x 3 x S x S`` resampled from ``src`` with the taps ``x`` (columns) and ``y`` (rows) of
    ``antialias_taps``: torchvision's antialiased bilinear resize.

    Separable: each pass is one sparse (block-diagonal, ``taps`` entries per row) by dense matrix product over all
    samples and channels, so the cost grows with the taps (about twice the downscale), not with their square;
    each pass resamples rows, with a transpose after each.
    """
    n, c, height, width = src.shape
    size = x[0].shape[1]
    by_y = torch.sparse.mm(_axis_matrix(*y, height, c, scale), src.reshape(n * c * height, width))
    by_y = by_y.view(n * c, size, width).transpose(1, 2).reshape(n * c * width, size)
    out = torch.sparse.mm(_axis_matrix(*x, width, c, 1.0), by_y)  # rows (sample, channel, x), columns y
    return out.view(n, c, size, size).transpose(2, 3).contiguous()


def _axis_matrix(index: Tensor, weight: Tensor, extent: int, channels: int, scale: float) -> Tensor:
    """Sparse CSR ``(N C S) x (N C extent)`` matrix applying the taps ``index``, ``weight`` (``N x S x T``, shared
    by the channels of a sample) to every (sample, channel) line of ``extent`` source pixels, times ``scale``.
    (CSR: about 10% faster than COO in the product on the CPU.)"""
    n, size, taps = index.shape
    planes = torch.arange(n * channels, device=index.device).view(-1, 1, 1) * extent
    columns = index.repeat_interleave(channels, dim=0).add_(planes)  # each row's columns distinct, ascending
    values = weight.repeat_interleave(channels, dim=0).mul_(scale)
    rows = torch.arange(0, n * channels * size * taps + 1, taps, device=index.device)
    with warnings.catch_warnings():  # torch warns once that sparse CSR support is in beta
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, columns.view(-1), values.view(-1),
                                       (n * channels * size, n * channels * extent), check_invariants=False)
