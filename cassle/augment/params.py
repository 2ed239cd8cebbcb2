"""Per-sample view parameters, and batched RandomResizedCrop parameter sampling (torchvision's rule)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

CROP_ATTEMPTS = 10
"""torchvision's RandomResizedCrop tries this many (area, ratio) draws before its centre-crop fallback."""

CROP_DRAWS = 2 * CROP_ATTEMPTS + 2
"""Uniform numbers per sample used by ``sample_crops``: scales, log-ratios, top, left."""


@dataclass(frozen=True, eq=False)
class ViewParams:
    """Everything random about one batch of views; tensors of length N on one device.

    ``factors`` hold the identity (1, 1, 1, 0) where ``jitter`` is False, and ``sigma`` is 0 where ``blur`` is
    False, so skipped operations read as identities.
    """

    src_size: Tensor  # N x 2 int64: source (height, width) in pixels
    crop: Tensor  # N x 4 int64: (top, left, height, width) in source pixels
    flip: Tensor  # N bool
    jitter: Tensor  # N bool
    factors: Tensor  # N x 4 float32: brightness, contrast, saturation factors and hue shift (JITTER_OPS order)
    order: Tensor  # N x 4 int64: per-sample permutation of the jitter ops, applied left to right
    grayscale: Tensor  # N bool
    blur: Tensor  # N bool
    sigma: Tensor  # N float32: Gaussian blur standard deviation in output pixels

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters on another device."""
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, index: Tensor | slice) -> ViewParams:
        """The parameters of the samples ``index`` (a LongTensor or a slice), in that order."""
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return self.crop.shape[0]


def sample_crops(
    src_size: Tensor, uniforms: Tensor, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """RandomResizedCrop parameters ``N x 4`` (top, left, height, width), batched, torchvision's rule.

    ``src_size``: ``N x 2`` (H, W); ``uniforms``: ``N x CROP_DRAWS`` float64 U[0, 1). Per sample, the first of
    ``CROP_ATTEMPTS`` draws of area ~ U(scale) * H * W and log-ratio ~ U(log ratio) with
    ``w = round(sqrt(area * r))``, ``h = round(sqrt(area / r))``, ``0 < w <= W``, ``0 < h <= H`` is accepted, and
    top ~ U{0..H-h}, left ~ U{0..W-w}; if none is accepted, a centre crop of the whole image with its aspect
    ratio clamped into ``ratio``.
    """
    size = src_size.to(torch.float64)
    height, width = size[:, :1], size[:, 1:]
    u_scale, u_ratio = uniforms[:, :CROP_ATTEMPTS], uniforms[:, CROP_ATTEMPTS : 2 * CROP_ATTEMPTS]
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_scale)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first accepted attempt (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    height, width = height.squeeze(1), width.squeeze(1)
    top = torch.floor(uniforms[:, -2] * (height - h + 1))
    left = torch.floor(uniforms[:, -1] * (width - w + 1))

    # torchvision's fallback: the whole image, narrowed to the nearest allowed aspect ratio, centred
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    accepted = ok.any(dim=1)
    h, w = torch.where(accepted, h, fb_h), torch.where(accepted, w, fb_w)
    top = torch.where(accepted, top, torch.div(height - fb_h, 2, rounding_mode="floor"))
    left = torch.where(accepted, left, torch.div(width - fb_w, 2, rounding_mode="floor"))
    return torch.stack((top, left, h, w), dim=1).to(torch.int64)
