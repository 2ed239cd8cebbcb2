"""Rendering views from their parameters: crop + resize + flip, colour jitter, grayscale and blur.

On the CPU one numba kernel renders each view (``cassle.augment.fused``, while ``FUSED_CPU``). On other devices
the batch goes through the stages one after the other with eager PyTorch ops (``resize``, ``functional``), its
samples in an order that groups those sharing work (``render_order``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.profiler import record_function

from cassle.augment.functional import (
    blur_kernel_size,
    blur_kernel_table,
    color_jitter,
    gaussian_blur,
    jitter_order_code,
    to_gray,
)
from cassle.augment.images import Images, load_sources, value_scale
from cassle.augment.params import ViewParams
from cassle.augment.resize import (
    antialias_tap_count,
    antialias_taps,
    antialiased_crop,
    bilinear_crop,
    bilinear_positions,
    bilinear_taps,
    needs_antialias,
)

FUSED_CPU = True
"""Render CPU views with the numba kernel (``cassle.augment.fused``), several times faster than the eager ops of
the other devices, which render them when this is False (the tests hold the two paths to each other)."""


def render(images: Images, p: ViewParams, size: int, antialias: bool, blur_kernel: int) -> tuple[Tensor, Tensor]:
    """Views ``N x 3 x size x size`` (float32 in [0, 1]) and color_diff ``N x 3`` of the samples ``p`` (on the
    images' device) of ``images``."""
    if FUSED_CPU and p.crop.device.type == "cpu":
        with record_function("ViewSampler.render"):
            return _render_fused(images, p, size, antialias, blur_kernel)
    plan = _plan(images, p, size, antialias)
    x, color_diff = _crop_and_color(images, plan, size)
    with record_function("ViewSampler.blur"):
        _blur(x, plan, blur_kernel)
    inverse = torch.argsort(plan.order)
    return x.index_select(0, inverse), color_diff.index_select(0, inverse)


def _render_fused(images: Images, p: ViewParams, size: int, antialias: bool, blur_kernel: int
                  ) -> tuple[Tensor, Tensor]:
    """``render`` by the numba kernel, which reads the sources in place (no copies of crop regions)."""
    from cassle.augment.fused import render_views  # numba is needed only here: a GPU-only machine may lack it
    n = len(p)
    # both axes in one call, rows (y) first: start, length and extent of each box, mirrored where flipped (x)
    start, length = p.crop[:, :2].T.reshape(-1), p.crop[:, 2:].T.reshape(-1)
    mirror = torch.cat((torch.zeros_like(p.flip), p.flip))
    if antialias:  # torchvision's antialiased filter is the bilinear one on an axis that is not downscaled
        taps = antialias_taps(start, length, p.src_size.T.reshape(-1) - start, size,
                              antialias_tap_count(length, size), mirror)
    else:
        taps = bilinear_taps(bilinear_positions(start, length, size, mirror), start + length)
    index, weight = taps
    y, x = (index[:n], weight[:n]), (index[n:], weight[n:])
    return render_views(images, y, x, value_scale(images), p.jitter, p.factors, p.order, p.grayscale,
                        blur_kernel_table(p.sigma, p.blur, blur_kernel))


def render_order(p: ViewParams) -> Tensor:
    """A permutation of the samples for the eager path: jittered first, by ``jitter_order_code`` (few runs of
    samples sharing an op at each jitter step)."""
    return torch.argsort((~p.jitter).to(torch.int64) * 1024 + jitter_order_code(p.order), stable=True)


@dataclass(frozen=True)
class _Plan:
    """A batch's parameters in rendering order, and what can be computed from them before touching pixels."""

    order: Tensor  # rendering position -> sample index
    params: ViewParams  # in rendering order
    flags: dict[str, list]  # antialias, jitter, grayscale, blur flags and sigma, in rendering order, on the host
    origin: Tensor  # N x 2 (top, left) of the crop boxes in the loaded sources (load_sources)
    x: Tensor  # bilinear column positions in the loaded sources, N x size
    y: Tensor  # bilinear row positions, N x size


def _plan(images: Images, p: ViewParams, size: int, antialias: bool) -> _Plan:
    order = render_order(p)
    q = p.select(order)
    aa = needs_antialias(q.crop[:, 2], q.crop[:, 3], size, antialias)
    flags = {"antialias": aa.tolist(), "jitter": q.jitter.tolist(), "grayscale": q.grayscale.tolist(),
             "blur": q.blur.tolist(), "sigma": q.sigma.tolist()}
    # a list is loaded as crop regions at the origin, a batch tensor whole (load_sources)
    origin = q.crop[:, :2] if isinstance(images, Tensor) else torch.zeros_like(q.crop[:, :2])
    x = bilinear_positions(origin[:, 1], q.crop[:, 3], size, q.flip)
    y = bilinear_positions(origin[:, 0], q.crop[:, 2], size)
    return _Plan(order, q, flags, origin, x, y)


def _crop_and_color(images: Images, plan: _Plan, size: int) -> tuple[Tensor, Tensor]:
    """Cropped, jittered and grayscaled views in rendering order, and their color_diff."""
    c, flags = plan.params, plan.flags
    with record_function("ViewSampler.crop"):
        parts = [(index, _crop(images, plan, index, kind)) for kind in sorted(set(flags["antialias"]))
                 if (index := _where([a == kind for a in flags["antialias"]], c.crop.device)) is not None]
        x = parts[0][1]
        if len(parts) > 1:
            x = torch.empty(len(c), 3, size, size, dtype=torch.float32, device=x.device)
            for index, views in parts:
                _update(x, index, lambda _, v=views: v)
    with record_function("ViewSampler.jitter"):
        color_diff = torch.zeros(len(x), 3, dtype=torch.float32, device=x.device)
        if (index := _where(flags["jitter"], x.device)) is not None:

            def jitter(v: Tensor) -> Tensor:
                before = v.mean(dim=(2, 3))
                color_jitter(v, _take(c.factors, index), _take(c.order, index))
                color_diff[index] = before - v.mean(dim=(2, 3))
                return v

            _update(x, index, jitter)
    with record_function("ViewSampler.grayscale"):
        _update(x, _where(flags["grayscale"], x.device), lambda v: v.copy_(to_gray(v).expand(-1, 3, -1, -1)))
    return x, color_diff


def _crop(images: Images, plan: _Plan, sub: slice | Tensor, antialias: bool) -> Tensor:
    """Views of the samples at rendering positions ``sub``: bilinear, or torchvision's antialiased resize."""
    crop, size = _take(plan.params.crop, sub), plan.x.shape[1]
    if not antialias:
        src, scale = load_sources(images, _take(plan.order, sub), crop)
        return bilinear_crop(src, _take(plan.x, sub), _take(plan.y, sub), scale)
    top, left = _take(plan.origin, sub).unbind(1)
    height, width = crop[:, 2], crop[:, 3]
    taps = (antialias_tap_count(height, size), antialias_tap_count(width, size))
    if isinstance(images, Tensor):  # taps stay inside the images (moved left at their end)
        taps = (min(taps[0], images.shape[2]), min(taps[1], images.shape[3]))
        y_limit, x_limit = images.shape[2] - top, images.shape[3] - left
    else:  # load_sources pads each region to at least `taps`
        y_limit, x_limit = height.clamp_min(taps[0]), width.clamp_min(taps[1])
    src, scale = load_sources(images, _take(plan.order, sub), crop, taps)
    return antialiased_crop(src, antialias_taps(left, width, x_limit, size, taps[1], _take(plan.params.flip, sub)),
                            antialias_taps(top, height, y_limit, size, taps[0]), scale)


def _blur(x: Tensor, plan: _Plan, blur_kernel: int) -> None:
    """Blur, in place, the views ``x`` (in rendering order) that are to be blurred, with one kernel size: the
    largest one their sigmas need."""
    blur, sigma = plan.flags["blur"], plan.flags["sigma"]
    if (index := _where(blur, x.device)) is not None:
        width = blur_kernel_size(max(s for s, b in zip(sigma, blur) if b), blur_kernel)
        sigmas = _take(plan.params.sigma, index)
        _update(x, index, lambda v: gaussian_blur(v, sigmas, width))


def _where(flags: list[bool], device: torch.device) -> slice | Tensor | None:
    """Where ``flags`` are set: a slice when the positions are consecutive, else a LongTensor; None if nowhere."""
    pos = [i for i, flag in enumerate(flags) if flag]
    if not pos:
        return None
    if pos[-1] - pos[0] + 1 == len(pos):
        return slice(pos[0], pos[-1] + 1)
    return torch.tensor(pos, device=device)


def _take(x: Tensor, index: slice | Tensor) -> Tensor:
    """``x[index]`` along dim 0: a view for a slice."""
    return x[index] if isinstance(index, slice) else x.index_select(0, index)


def _update(x: Tensor, index: slice | Tensor | None, fn: Callable[[Tensor], Tensor]) -> None:
    """``x[index] = fn(x[index])`` along dim 0 (nothing if index is None); ``fn`` may work in place."""
    if index is None:
        return
    part = _take(x, index)
    out = fn(part)
    if isinstance(index, Tensor):
        x.index_copy_(0, index, out)
    elif out.data_ptr() != part.data_ptr():
        part.copy_(out)

