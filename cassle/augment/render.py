"""Rendering views from their parameters: crop + resize + flip, colour jitter, grayscale and blur, in chunks.

Samples are rendered in an order that groups those sharing work (``render_order``). On the CPU they are rendered in
chunks small enough for every stage to work in the cache (``CPU_CHUNK_PIXELS``); on other devices the whole batch
is one chunk. The bilinear sampling positions and the flags (on the host) are computed once per batch, the
antialiasing taps once per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.profiler import record_function

from cassle.augment.functional import blur_kernel_size, color_jitter, gaussian_blur, jitter_order_code, to_gray
from cassle.augment.images import Images, load_sources
from cassle.augment.params import ViewParams
from cassle.augment.resize import (
    antialias_tap_count,
    antialias_taps,
    antialiased_crop,
    bilinear_crop,
    bilinear_positions,
    needs_antialias,
)

CPU_CHUNK_PIXELS = 4 * 224 * 224
"""On the CPU, views are rendered in chunks of about this many pixels per intra-op thread (four 224 px views,
2.4 MB of float32 RGB): small enough for the stages of a chunk to stay in the caches, large enough for few calls
(the per-call costs of many small ops, and of the blur convolutions, dominate below); measured on the development
machine (2 to 16 views per thread at 224 px are within a few percent)."""


def render_order(p: ViewParams, antialias: Tensor, chunk: int) -> Tensor:
    """A permutation of the samples that groups those sharing work, for rendering in chunks of ``chunk``: by resize
    kind and crop size (few kinds per chunk, little padding when a list is packed), then within each chunk
    jittered first, by ``jitter_order_code`` (few runs of samples sharing an op at each jitter step)."""
    crop_side = p.crop[:, 2:].amax(dim=1)
    order = torch.argsort(antialias.to(torch.int64) * (crop_side.max() + 1) + crop_side, stable=True)
    position = torch.arange(len(order), device=order.device) // chunk
    key = (position * 2 + (~p.jitter[order]).to(torch.int64)) * 1024 + jitter_order_code(p.order[order])
    return order[torch.argsort(key, stable=True)]


@dataclass(frozen=True)
class _Plan:
    """A batch's parameters in rendering order, and what can be computed from them before touching pixels."""

    order: Tensor  # rendering position -> sample index
    params: ViewParams  # in rendering order
    flags: dict[str, list]  # antialias, jitter, grayscale, blur flags and sigma, in rendering order, on the host
    origin: Tensor  # N x 2 (top, left) of the crop boxes in the loaded sources (load_sources)
    x: Tensor  # bilinear column positions in the loaded sources, N x size
    y: Tensor  # bilinear row positions, N x size


def _plan(images: Images, p: ViewParams, size: int, antialias: bool, chunk: int) -> _Plan:
    aa = needs_antialias(p.crop[:, 2], p.crop[:, 3], size, antialias)
    order = render_order(p, aa, chunk)
    q = p.select(order)
    flags = {"antialias": aa[order].tolist(), "jitter": q.jitter.tolist(), "grayscale": q.grayscale.tolist(),
             "blur": q.blur.tolist(), "sigma": q.sigma.tolist()}
    # a list is loaded as crop regions at the origin, a batch tensor whole (load_sources)
    origin = q.crop[:, :2] if isinstance(images, Tensor) else torch.zeros_like(q.crop[:, :2])
    x = bilinear_positions(origin[:, 1], q.crop[:, 3], size, q.flip)
    y = bilinear_positions(origin[:, 0], q.crop[:, 2], size)
    return _Plan(order, q, flags, origin, x, y)


def render(images: Images, p: ViewParams, size: int, antialias: bool, blur_kernel: int) -> tuple[Tensor, Tensor]:
    """Views ``N x 3 x size x size`` (float32 in [0, 1]) and color_diff ``N x 3`` of the samples ``p`` (on the
    images' device) of ``images``."""
    n, device = len(p), p.crop.device
    chunk = n if device.type != "cpu" else max(1, CPU_CHUNK_PIXELS * torch.get_num_threads() // size**2)
    plan = _plan(images, p, size, antialias, chunk)
    views = torch.empty(n, 3, size, size, dtype=torch.float32, device=device)
    color_diff = torch.empty(n, 3, dtype=torch.float32, device=device)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        x, color_diff[rows] = _render_chunk(images, plan, rows, size)
        with record_function("ViewSampler.blur"):
            _blur(x, plan, rows, blur_kernel)
        views.index_copy_(0, plan.order[rows], x)
    return views, color_diff.index_select(0, torch.argsort(plan.order))


def _render_chunk(images: Images, plan: _Plan, rows: slice, size: int) -> tuple[Tensor, Tensor]:
    """Cropped, jittered and grayscaled views of the samples at rendering positions ``rows``, and color_diff."""
    c, flags = plan.params.select(rows), {name: values[rows] for name, values in plan.flags.items()}
    with record_function("ViewSampler.crop"):
        parts = [(index, _crop(images, plan, _shift(index, rows.start), kind))
                 for kind in sorted(set(flags["antialias"]))
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


def _blur(x: Tensor, plan: _Plan, rows: slice, blur_kernel: int) -> None:
    """Blur, in place, the views ``x`` at rendering positions ``rows`` that are to be blurred, with one kernel size:
    the largest one their sigmas need."""
    blur, sigma = plan.flags["blur"][rows], plan.flags["sigma"][rows]
    if (index := _where(blur, x.device)) is not None:
        width = blur_kernel_size(max(s for s, b in zip(sigma, blur) if b), blur_kernel)
        sigmas = _take(plan.params.sigma, _shift(index, rows.start))
        _update(x, index, lambda v: gaussian_blur(v, sigmas, width))


def _where(flags: list[bool], device: torch.device) -> slice | Tensor | None:
    """Where ``flags`` are set: a slice when the positions are consecutive, else a LongTensor; None if nowhere."""
    pos = [i for i, flag in enumerate(flags) if flag]
    if not pos:
        return None
    if pos[-1] - pos[0] + 1 == len(pos):
        return slice(pos[0], pos[-1] + 1)
    return torch.tensor(pos, device=device)


def _shift(index: slice | Tensor, offset: int) -> slice | Tensor:
    """An index into a slice of a tensor starting at ``offset``, as an index into the whole tensor."""
    return slice(index.start + offset, index.stop + offset) if isinstance(index, slice) else index + offset


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

