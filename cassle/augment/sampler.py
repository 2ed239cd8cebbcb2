"""ViewSampler: batched SSL augmentations that record their parameters omega."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cassle.augment.images import Images, image_sizes
from cassle.augment.layout import OMEGA_DIM, OMEGA_SLICES
from cassle.augment.params import CROP_DRAWS, ViewParams, sample_crops
from cassle.augment.render import render

_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # jitter factors that change nothing (JITTER_OPS order)


def _draw_layout(widths: dict[str, int]) -> tuple[dict[str, slice], int]:
    """Columns of the per-sample uniforms drawn in one call by ViewSampler.sample (the crop's come first)."""
    columns, start = {}, CROP_DRAWS
    for name, width in widths.items():
        columns[name] = slice(start, start + width)
        start += width
    return columns, start


_COLUMNS, _DRAWS = _draw_layout({"flip": 1, "jitter": 1, "factors": 4, "order": 4, "grayscale": 1, "blur": 1,
                                 "sigma": 1})


def default_blur_kernel(size: int) -> int:
    """The paper's 23 px kernel at 224 px, scaled with the view size to the nearest odd integer (>= 1)."""
    return max(1, 2 * round((23 * size / 224 - 1) / 2) + 1)


def _check_probability(name: str, p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(name: str, r: Sequence[float], low: float, high: float, low_open: bool = False) -> tuple[float, float]:
    """A (lo, hi) pair with ``low <= lo <= hi <= high`` (``low < lo`` if ``low_open``)."""
    bound = f"{'(' if low_open else '['}{low}, {high}]"
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of numbers in {bound}, got {r!r}") from None
    if not (low < lo if low_open else low <= lo) or not lo <= hi <= high:
        raise ValueError(f"{name} must satisfy lo <= hi within {bound}, got {r!r}")
    return lo, hi


def _check_jitter(jitter: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in jitter)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or min(values) < 0 or values[3] > 0.5:
        raise ValueError(
            f"jitter must be 4 non-negative strengths (brightness, contrast, saturation, hue) with hue <= 0.5, "
            f"got {jitter!r}"
        )
    return values  # type: ignore[return-value]


class ViewSampler:
    """Random views of a batch of images and their augmentation descriptors omega (``N x 14``, see omega.py).

    Pipeline per sample, the authors' order: RandomResizedCrop -> horizontal flip -> colour jitter (random op
    order per sample) -> grayscale -> Gaussian blur. Defaults are the paper's ImageNet-100 pipeline; the resize is
    torchvision's bilinear one, antialiased where it downscales (``antialias=True``). Views are float32 in [0, 1],
    not normalised. ``sampler(images, generator=g)`` equals
    ``sampler.apply(images, sampler.sample(image_sizes(images), g))``. Rendering: ``cassle.augment.render``.
    """

    def __init__(
        self,
        size: int = 224,
        *,
        crop_scale: Sequence[float] = (0.2, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        gray_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        antialias: bool = True,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (view side in pixels), got {size!r}")
        self.size = size
        self.crop_scale = _check_range("crop_scale", crop_scale, 0.0, 1.0, low_open=True)
        self.crop_ratio = _check_range("crop_ratio", crop_ratio, 0.0, math.inf, low_open=True)
        self.flip_p = _check_probability("flip_p", flip_p)
        self.jitter_p = _check_probability("jitter_p", jitter_p)
        self.jitter = _check_jitter(jitter)
        self.gray_p = _check_probability("gray_p", gray_p)
        self.blur_p = _check_probability("blur_p", blur_p)
        self.blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, math.inf, low_open=True)
        kernel = default_blur_kernel(size) if blur_kernel is None else blur_kernel
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be an odd positive int or None, got {blur_kernel!r}")
        if kernel // 2 >= size:
            raise ValueError(f"blur_kernel {kernel} needs reflect padding {kernel // 2} < size {size}; "
                             f"use a kernel of at most {2 * size - 1}")
        self.blur_kernel = kernel
        if not isinstance(antialias, bool):
            raise ValueError(f"antialias must be a bool, got {antialias!r}")
        self.antialias = antialias
        b, c, s, h = self.jitter
        self.jitter_ranges = ((max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h))

    def config(self) -> dict[str, Any]:
        """Settings as keyword arguments: ``ViewSampler(**sampler.config())`` rebuilds the sampler."""
        keys = ("size", "crop_scale", "crop_ratio", "flip_p", "jitter_p", "jitter", "gray_p", "blur_p",
                "blur_sigma", "blur_kernel", "antialias")
        return {k: getattr(self, k) for k in keys}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def __call__(self, images: Images, generator: torch.Generator | None = None, *, position: int = 0,
                 total: int | None = None) -> tuple[Tensor, Tensor]:
        """Views ``N x 3 x size x size`` (float32, [0, 1]) and omega ``N x 14`` on the images' device; `position`
        and `total` as in ``sample``."""
        return self.apply(images, self.sample(image_sizes(images), generator, position=position, total=total))

    def sample(self, src_size: Tensor | Sequence[Sequence[int]], generator: torch.Generator | None = None, *,
               position: int = 0, total: int | None = None) -> ViewParams:
        """Draw all random parameters for sources of sizes ``N x 2`` (H, W), on the generator's device.

        Each sample takes a fixed number of uniform draws, whatever its size. With `total`, the draws of a whole
        batch of `total` samples are made and the N rows from `position` on are used: the processes of a distributed
        run, each holding its slice of the global batch and the same generator, draw exactly the parameters that one
        process would draw for the whole batch."""
        src_size = torch.as_tensor(src_size, dtype=torch.int64)
        if src_size.ndim != 2 or src_size.shape[1] != 2 or src_size.shape[0] == 0:
            raise ValueError(f"src_size must be a non-empty N x 2 table of (height, width), got shape "
                             f"{tuple(src_size.shape)}; use image_sizes(images)")
        if (src_size < 1).any():
            raise ValueError(f"src_size must be positive, got a minimum of {int(src_size.min())}")
        device = generator.device if generator is not None else torch.device("cpu")
        n = src_size.shape[0]
        total = n if total is None else total
        if position < 0 or position + n > total:
            raise ValueError(f"rows {position}..{position + n} of a batch of {total}: position must be >= 0 and "
                             "position + N <= total")
        u = torch.rand(total, _DRAWS, generator=generator, dtype=torch.float64, device=device)[position:position + n]
        draws = {name: u[:, cols].squeeze(1) for name, cols in _COLUMNS.items()}
        src_size = src_size.to(device)
        jitter = draws["jitter"] < self.jitter_p
        lo = torch.tensor([r[0] for r in self.jitter_ranges], dtype=torch.float64, device=device)
        hi = torch.tensor([r[1] for r in self.jitter_ranges], dtype=torch.float64, device=device)
        factors = lo + (hi - lo) * draws["factors"]
        identity = torch.tensor(_IDENTITY, dtype=torch.float64, device=device)
        blur = draws["blur"] < self.blur_p
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * draws["sigma"]
        return ViewParams(
            src_size=src_size,
            crop=sample_crops(src_size, u[:, :CROP_DRAWS], self.crop_scale, self.crop_ratio),
            flip=draws["flip"] < self.flip_p,
            jitter=jitter,
            factors=torch.where(jitter.unsqueeze(1), factors, identity).to(torch.float32),
            order=draws["order"].argsort(dim=1),
            grayscale=draws["grayscale"] < self.gray_p,
            blur=blur,
            sigma=torch.where(blur, sigma, 0.0).to(torch.float32),
        )

    def apply(self, images: Images, params: ViewParams) -> tuple[Tensor, Tensor]:
        """Render the views described by ``params`` and their omega (deterministic given params)."""
        sizes = image_sizes(images)
        if len(params) != sizes.shape[0] or not torch.equal(params.src_size.cpu(), sizes):
            raise ValueError(f"params were sampled for {len(params)} sources of other sizes than these "
                             f"{sizes.shape[0]} images; sample them with sampler.sample(image_sizes(images))")
        p = params.to(images.device if isinstance(images, Tensor) else images[0].device)
        views, color_diff = render(images, p, self.size, self.antialias, self.blur_kernel)
        return views, self._omega(p, color_diff)

    def _omega(self, p: ViewParams, color_diff: Tensor) -> Tensor:
        """Assemble the N x 14 descriptor (layout in OMEGA_SLICES)."""
        dev = color_diff.device
        src_h, src_w = p.src_size.to(torch.float64).unbind(1)
        top, left, height, width = p.crop.to(torch.float64).unbind(1)
        cx = (left + width / 2) / src_w
        crop = torch.stack(((top + height / 2) / src_h, torch.where(p.flip, 1 - cx, cx), height / src_h,
                            width / src_w), dim=1)
        centre = torch.tensor(_IDENTITY, dtype=torch.float32, device=dev)
        span = torch.tensor([hi - lo for lo, hi in self.jitter_ranges], dtype=torch.float32, device=dev)
        color = torch.where(span > 0, (p.factors - centre) / span.clamp_min(1e-12), 0.0)
        omega = torch.empty(len(p), OMEGA_DIM, dtype=torch.float32, device=dev)
        columns = {"blur": p.sigma.unsqueeze(1), "color": color, "color_diff": color_diff, "crop": crop,
                   "flip": p.flip.unsqueeze(1), "grayscale": p.grayscale.unsqueeze(1)}
        for key, cols in columns.items():
            omega[:, OMEGA_SLICES[key]] = cols.to(torch.float32)
        return omega

