"""Batched image operations with per-sample parameters (torchvision semantics, no per-sample Python loops).

All functions take float32 images ``N x 3 x H x W`` in [0, 1] on any device, and per-sample parameter tensors of
length ``N`` on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601 luma weights, as torchvision's rgb_to_grayscale."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
"""Colour-jitter operations, indexed 0..3 in ``order`` tensors and in the columns of ``factors``."""


def to_gray(x: Tensor) -> Tensor:
    """Luma ``N x 1 x H x W`` of RGB images ``N x 3 x H x W``."""
    r, g, b = x.unbind(1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _per_sample(values: Tensor) -> Tensor:
    """Shape a length-N parameter vector to broadcast over ``N x C x H x W``."""
    return values.to(torch.float32).view(-1, 1, 1, 1)


def _blend(x: Tensor, target: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f * x + (1 - f) * target, 0, 1)`` per sample (torchvision's ``_blend``), in place on x, as one
    ``lerp`` from target towards x."""
    return torch.lerp(target, x, _per_sample(factor), out=x).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(b * x, 0, 1)`` per sample; in place on x."""
    return x.mul_(_per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its own luma (= the luma of its channel means); in place on x. (A blend
    with a per-sample constant: multiply and add, faster than ``lerp`` with a broadcast start.)"""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device)
    f = _per_sample(factor)
    mean = (x.mean(dim=(2, 3)) @ weights).view(-1, 1, 1, 1)
    return x.mul_(f).add_(mean.mul_(1.0 - f)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its own luma image; in place on x."""
    return _blend(x, to_gray(x), factor)


_HUE_CHANNEL_SHIFT = (5.0, 3.0, 1.0)  # HSV -> RGB: channel c is a trapezoid of (h6 + n_c) mod 6, for R, G, B


def hue_offsets(shift: Tensor) -> Tensor:
    """Per-sample, per-channel offsets ``o_c = ((n_c + 6 * shift) mod 6) - 5`` of the hue rotation (``N x 3``,
    float32; see ``adjust_hue``)."""
    channel_shift = torch.tensor(_HUE_CHANNEL_SHIFT, dtype=torch.float32, device=shift.device)
    return (channel_shift + 6.0 * shift.to(torch.float32).unsqueeze(1)).remainder_(6.0).sub_(5.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, in [-0.5, 0.5]) per sample, keeping HSV saturation and value;
    in place on x.

    Same result as torchvision's RGB -> HSV -> RGB round trip (``adjust_hue``) up to float rounding, in fewer
    passes and with few, single-channel temporaries: the hue in sixths ``h6`` (in [-1, 5)) comes from the channel
    holding the maximum; output channel c is ``max - (max - min) * clamp(2 - d_c, 0, 1)``, where ``d_c`` is the
    distance of ``(h6 + n_c + 6 * shift) mod 6`` from 2 on the hue circle, computed without a modulo as
    ``||h6 + o_c| - 3|`` with the per-sample offset ``o_c = ((n_c + 6 * shift) mod 6) - 5`` (valid because
    ``h6 + o_c + 5`` stays in [-1, 11]).
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    span = torch.minimum(r, g)
    torch.minimum(span, b, out=span)
    torch.sub(maxc, span, out=span)
    inv_span = span.clamp_min(torch.finfo(x.dtype).tiny).reciprocal_()  # span = 0 => numerators below are 0
    h6 = torch.addcmul(x.new_tensor(4.0), torch.sub(r, g), inv_span)  # max is b
    part = torch.addcmul(x.new_tensor(2.0), torch.sub(b, r), inv_span)  # max is g
    mask = torch.eq(g, maxc, out=torch.empty_like(maxc))  # float 0/1 (a bool mask would need a slow cast)
    h6.lerp_(part, mask)
    torch.sub(g, b, out=part).mul_(inv_span)  # max is r; r wins ties, as in torchvision
    h6.lerp_(part, torch.eq(r, maxc, out=mask))
    torch.add(h6.unsqueeze(1), hue_offsets(shift).to(x.dtype).view(-1, 3, 1, 1), out=x)
    x.abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)  # x = 2 - ramp
    low = torch.add(maxc, span, alpha=-2.0, out=inv_span)  # max - span * (2 - x) = (max - 2 span) + span * x
    return torch.addcmul(low.unsqueeze(1), span.unsqueeze(1), x, out=x)


_JITTER_FUNCTIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_order_code(order: Tensor) -> Tensor:
    """An integer per sample identifying its op order, for sorting samples into few runs per step: first by the
    step at which hue (the costliest op) runs, so each step's hue samples form one run, then lexicographically."""
    weights = torch.tensor([64, 16, 4, 1], dtype=order.dtype, device=order.device)
    hue_step = (order == JITTER_OPS.index("hue")).to(order.dtype).argmax(dim=1)
    return hue_step * 256 + (order * weights).sum(dim=1)


def color_jitter(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Apply brightness, contrast, saturation and hue in a per-sample order, in place on x; returns x.

    ``factors``: ``N x 4`` (brightness, contrast, saturation factors and hue shift); ``order``: ``N x 4`` integer
    permutations of 0..3 indexing ``JITTER_OPS``. At step t each sample gets op ``order[:, t]``; ops run on
    contiguous runs of samples sharing it (views, no copies), so sorting the samples by ``jitter_order_code``
    first keeps the number of runs small. Correct in any sample order.
    """
    ops = order.tolist()
    for step in range(len(JITTER_OPS)):
        column = [o[step] for o in ops]
        for start, end in _runs(column):
            op = column[start]
            _JITTER_FUNCTIONS[op](x[start:end], factors[start:end, op])
    return x


def _runs(values: Sequence[object]) -> list[tuple[int, int]]:
    """(start, end) of the maximal runs of equal consecutive values."""
    starts = [i for i in range(len(values)) if i == 0 or values[i] != values[i - 1]]
    return list(zip(starts, [*starts[1:], len(values)]))


NEGLIGIBLE_WEIGHT = 1e-20
"""Blur taps below this are set to 0: far below float32 resolution of the result, and it keeps denormal
numbers (e.g. exp(-90) for a small sigma), which are ~10x slower on x86 CPUs, out of the convolution."""


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``N x kernel_size`` on the grid ``linspace(-(k-1)/2, (k-1)/2, k)``."""
    half = (kernel_size - 1) / 2.0
    grid = torch.linspace(-half, half, kernel_size, dtype=torch.float32, device=sigma.device)
    kernel = torch.softmax(-0.5 * (grid / sigma.to(torch.float32).unsqueeze(1)) ** 2, dim=1)
    return kernel.masked_fill_(kernel < NEGLIGIBLE_WEIGHT, 0.0)


BLUR_TAIL_SIGMAS = 5.7
"""Blur taps further than this many sigmas from the centre weigh < 1e-7 of the peak (exp(-5.7^2/2)), below float32
resolution of the result: ``blur_kernel_size`` skips them."""


def blur_kernel_size(sigma: float, kernel_size: int) -> int:
    """The odd kernel size, at most ``kernel_size``, that covers ``BLUR_TAIL_SIGMAS`` sigmas on each side."""
    return 2 * min(kernel_size // 2, math.ceil(BLUR_TAIL_SIGMAS * sigma)) + 1


def blur_kernel_table(sigma: Tensor, blur: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Per sample, its own Gaussian kernel (``gaussian_kernels`` of width ``blur_kernel_size``), left-aligned in
    an ``N x width`` table, and the widths (``N``, int64; 0 where not ``blur``)."""
    widths = [blur_kernel_size(s, kernel_size) if b else 0 for s, b in zip(sigma.tolist(), blur.tolist())]
    table = torch.zeros(len(widths), max(widths, default=0), dtype=torch.float32, device=sigma.device)
    for width in set(widths) - {0}:
        rows = torch.tensor([i for i, w in enumerate(widths) if w == width], device=sigma.device)
        table[rows, :width] = gaussian_kernels(sigma[rows], width)
    return table, torch.tensor(widths, dtype=torch.int64, device=sigma.device)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with per-sample sigma and reflect padding (torchvision ``gaussian_blur``), for
    images in [0, 1]. The depthwise convolutions run channels-last (samples x channels as the vector dimension):
    on the CPU several times faster than channels-first, whose depthwise kernels are slow for most sizes."""
    n, c, h, w = x.shape
    pad = kernel_size // 2
    kernel = gaussian_kernels(sigma, kernel_size).repeat_interleave(c, dim=0)  # (n*c, k)
    padded = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    padded = padded.contiguous(memory_format=torch.channels_last)
    rows = F.conv2d(padded, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    out = F.conv2d(rows, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return out.clamp_(0.0, 1.0).view(n, c, h, w)  # the kernel sums to 1 only up to rounding
