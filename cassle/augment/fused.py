"""The CPU renderer: one numba kernel makes each view (crop + resize + flip, colour jitter, grayscale, blur).

Views are rendered in parallel (numba ``prange``, as many threads as torch's intra-op pool), each in a few
vectorised whole-view passes while it stays in the cache: the separable resampling reads its source in place (uint8
or float, any size), each jitter op is one pass over the three planes (the eager PyTorch ops of
``cassle.augment.functional``, used on other devices, take ~40 single-plane passes for the hue rotation alone),
and the blur is a separable convolution with the view's own kernel width. Same semantics as the eager path of
``cassle.augment.render`` (torchvision's), up to float rounding; the tests hold the two paths to each other and to
torchvision.

The kernel is compiled on first use and cached next to this file (or in numba's user cache when that is not
writable): a machine pays the compilation (~10 s) once.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from cassle.augment.functional import GRAY_WEIGHTS, JITTER_OPS, hue_offsets
from cassle.augment.images import Images

_F = np.float32
_W0, _W1, _W2 = (_F(w) for w in GRAY_WEIGHTS)
_ZERO, _ONE, _TWO, _THREE, _FOUR = _F(0), _F(1), _F(2), _F(3), _F(4)
_TINY = _F(np.finfo(np.float32).tiny)
_BRIGHTNESS, _CONTRAST, _SATURATION = (JITTER_OPS.index(op) for op in ("brightness", "contrast", "saturation"))
_HUE = JITTER_OPS.index("hue")

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba would pick its OpenMP layer (torch loads libgomp), which kills a forked child that calls the kernel,
    # as a DataLoader worker may; with the workqueue layer such a child works (at 1 thread, as torch's own ops)
    numba.config.THREADING_LAYER = "workqueue"

_LOCK = threading.Lock()
"""The workqueue threading layer must not be entered by two Python threads at once."""


@njit(fastmath=True)
def _clamp(v):
    return min(max(v, _ZERO), _ONE)


@njit(fastmath=True)
def _transpose_clamped(a, out):
    """``out = clamp(a.T, 0, 1)`` for 2-D arrays, in tiles that stay in the L1 cache."""
    tile = 16
    for i0 in range(0, a.shape[0], tile):
        for j0 in range(0, a.shape[1], tile):
            for i in range(i0, min(i0 + tile, a.shape[0])):
                for j in range(j0, min(j0 + tile, a.shape[1])):
                    out[j, i] = _clamp(a[i, j])


@njit(fastmath=True)
def _resample(src, y_index, y_weight, x_index, x_weight, scale, view):
    """``view`` (3 x S x S) from ``src`` (3 x H x W): along y over the columns the x taps read, then along x.
    Both passes run along contiguous memory (vectorised), the second on transposed rows."""
    size = view.shape[1]
    x_lo, x_hi = x_index.min(), x_index.max() + 1
    rows = np.empty((size, x_hi - x_lo), dtype=np.float32)
    columns = np.empty((x_hi - x_lo, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    for c in range(3):
        for r in range(size):
            row = rows[r]
            row[:] = _ZERO
            for t in range(y_index.shape[1]):
                w = y_weight[r, t] * scale
                if w != _ZERO:
                    line = src[c, y_index[r, t]]
                    for col in range(x_lo, x_hi):
                        row[col - x_lo] += w * _F(line[col])
        _transpose_clamped(rows, columns)  # values in [0, 1] up to rounding
        for col in range(size):
            acc = out[col]
            acc[:] = _ZERO
            for t in range(x_index.shape[1]):
                w = x_weight[col, t]
                if w != _ZERO:
                    column = columns[x_index[col, t] - x_lo]
                    for r in range(size):
                        acc[r] += w * column[r]
        _transpose_clamped(out, view[c])


@njit(fastmath=True)
def _hue_channel(h6, offset, low, span):
    """One output channel of the hue rotation (see functional.adjust_hue for the formula)."""
    return _clamp(low + span * min(max(abs(abs(h6 + offset) - _THREE), _ONE), _TWO))  # [0, 1] after rounding


@njit(fastmath=True)
def _jitter_op(op, f, offsets, mean, v, hw):
    """Jitter op ``op`` with factor ``f`` on the view ``v`` (3 planes of ``hw`` floats, flattened), in place.
    ``mean``: the view's mean luma (contrast); ``offsets``: the per-channel hue offsets (hue)."""
    if op == _BRIGHTNESS:
        for p in range(3 * hw):
            v[p] = _clamp(v[p] * f)
    elif op == _CONTRAST:
        m = (_ONE - f) * mean
        for p in range(3 * hw):
            v[p] = _clamp(v[p] * f + m)
    elif op == _SATURATION:
        for p in range(hw):
            r, g, b = v[p], v[hw + p], v[2 * hw + p]
            gray = r * _W0 + g * _W1 + b * _W2
            v[p] = _clamp(gray + f * (r - gray))
            v[hw + p] = _clamp(gray + f * (g - gray))
            v[2 * hw + p] = _clamp(gray + f * (b - gray))
    else:
        o0, o1, o2 = offsets[0], offsets[1], offsets[2]
        for p in range(hw):
            r, g, b = v[p], v[hw + p], v[2 * hw + p]
            top = max(max(r, g), b)
            span = top - min(min(r, g), b)
            inv = _ONE / max(span, _TINY)
            h6 = _FOUR + (r - g) * inv  # the maximum is b; g, then r, win ties, as in torchvision
            if g == top:
                h6 = _TWO + (b - r) * inv
            if r == top:
                h6 = (g - b) * inv
            low = top - _TWO * span
            v[p] = _hue_channel(h6, o0, low, span)
            v[hw + p] = _hue_channel(h6, o1, low, span)
            v[2 * hw + p] = _hue_channel(h6, o2, low, span)


@njit(fastmath=True)
def _channel_means(v, hw, out):
    s0 = s1 = s2 = 0.0
    for p in range(hw):
        s0 += v[p]
        s1 += v[hw + p]
        s2 += v[2 * hw + p]
    out[0], out[1], out[2] = s0 / hw, s1 / hw, s2 / hw


@njit(fastmath=True)
def _jitter(v, hw, factors, order, offsets, color_diff):
    """Colour jitter in the view's op order, in place; color_diff = channel means before minus after."""
    before, after = np.empty(3), np.empty(3)
    _channel_means(v, hw, before)
    k = 0  # contrast needs the mean luma at its step: the ops before it, the mean, the rest
    while order[k] != _CONTRAST:
        k += 1
    for t in range(k):
        _jitter_op(order[t], factors[order[t]], offsets, _ZERO, v, hw)
    _channel_means(v, hw, after)
    mean = _F(after[0] * _W0 + after[1] * _W1 + after[2] * _W2)
    for t in range(k, 4):
        _jitter_op(order[t], factors[order[t]], offsets, mean, v, hw)
    _channel_means(v, hw, after)
    for c in range(3):
        color_diff[c] = before[c] - after[c]


@njit(fastmath=True)
def _grayscale(v, hw):
    for p in range(hw):
        luma = v[p] * _W0 + v[hw + p] * _W1 + v[2 * hw + p] * _W2
        v[p] = luma
        v[hw + p] = luma
        v[2 * hw + p] = luma


@njit(fastmath=True)
def _reflect(i, n):
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


@njit(fastmath=True)
def _blur(view, kernel, width):
    """Separable Gaussian blur with reflect padding (torchvision's), in place, clamped to [0, 1]."""
    size, pad = view.shape[1], width // 2
    rows = np.empty((size, size), dtype=np.float32)
    line = np.empty(size + 2 * pad, dtype=np.float32)
    for c in range(3):
        plane = view[c]
        for r in range(size):
            row = rows[r]
            row[:] = _ZERO
            for t in range(width):
                w, src = kernel[t], plane[_reflect(r + t - pad, size)]
                for col in range(size):
                    row[col] += w * src[col]
        for r in range(size):  # then along x, each row from a reflect-padded copy
            row, dst = rows[r], plane[r]
            line[pad : pad + size] = row
            for t in range(pad):
                line[pad - 1 - t] = row[t + 1]
                line[pad + size + t] = row[size - 2 - t]
            row[:] = _ZERO
            for t in range(width):
                w = kernel[t]
                for col in range(size):
                    row[col] += w * line[col + t]
            for col in range(size):
                dst[col] = _clamp(row[col])


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _render(sources, y_index, y_weight, x_index, x_weight, scale, jitter, factors, order, offsets,
            gray, blur_kernels, blur_widths, views, color_diff):
    n, hw = views.shape[0], views.shape[2] * views.shape[3]
    for i in prange(n):
        view = views[i]
        _resample(sources[np.int64(i)], y_index[i], y_weight[i], x_index[i], x_weight[i], scale, view)
        flat = view.reshape(3 * hw)
        if jitter[i]:
            _jitter(flat, hw, factors[i], order[i], offsets[i], color_diff[i])
        if gray[i]:
            _grayscale(flat, hw)
        if blur_widths[i] > 1:
            _blur(view, blur_kernels[i], blur_widths[i])


def _array(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    return x.to(dtype).contiguous().numpy()


def _source(image: Tensor) -> np.ndarray:
    """An image as the kernel reads it: uint8 or float32 (one compiled variant each), C-contiguous."""
    return _array(image, image.dtype if image.dtype == torch.uint8 else torch.float32)


def render_views(images: Images, y: tuple[Tensor, Tensor], x: tuple[Tensor, Tensor], scale: float, jitter: Tensor,
                 factors: Tensor, order: Tensor, grayscale: Tensor, blur: tuple[Tensor, Tensor]
                 ) -> tuple[Tensor, Tensor]:
    """Views ``N x 3 x S x S`` (float32) and color_diff ``N x 3`` from CPU images (a ``B x 3 x H x W`` tensor or a
    list of ``3 x H x W`` ones, uint8 or float), read in place.

    View i: ``images[i]`` resampled with the separable taps ``y`` (rows) then ``x`` (columns), each
    ``(index, weight)`` of shape ``N x S x T``: absolute source positions (inside the image) and weights (0 for an
    unused tap), times ``scale``; then colour-jittered where ``jitter`` (``factors`` and ``order`` as in
    ``functional.color_jitter``), grayscaled where ``grayscale``, and blurred with the kernel ``blur[0][i, :w]``
    where its width ``w = blur[1][i]`` is above 1.
    """
    sources = _source(images) if isinstance(images, Tensor) else numba.typed.List([_source(im) for im in images])
    n, size = y[0].shape[:2]
    views = torch.empty(n, 3, size, size, dtype=torch.float32)
    color_diff = torch.zeros(n, 3, dtype=torch.float32)
    arguments = (sources, _array(y[0], torch.int64), _array(y[1], torch.float32),
                 _array(x[0], torch.int64), _array(x[1], torch.float32), _F(scale), _array(jitter, torch.bool),
                 _array(factors, torch.float32), _array(order, torch.int64), _array(hue_offsets(factors[:, _HUE]),
                 torch.float32), _array(grayscale, torch.bool), _array(blur[0], torch.float32),
                 _array(blur[1], torch.int64), views.numpy(), color_diff.numpy())
    with _LOCK:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        _render(*arguments)
    return views, color_diff
