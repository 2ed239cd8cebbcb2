"""ImageNet-C weather corruptions (brightness, frost, fog, snow; severities 1-5) on batches of [0, 1] images.

The severity tables are those of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), script `make_imagenet_c.py` (github.com/hendrycks/robustness,
ImageNet-C/create_c/make_imagenet_c.py). Re-implemented in torch/numpy (no wand/ImageMagick, no cv2):

- brightness: HSV value channel + c, clipped (exact: scaling RGB by V'/V keeps hue and saturation).
- fog: `x + c0 * plasma`, rescaled by `max(x) / (max(x) + c0)`; the plasma fractal (diamond-square, wibble
  decay c1) is drawn on the next power of two >= the image side and cropped, as ImageNet-C crops 224 of 256.
- frost: `c0 * x + c1 * frost`. ImageNet-C crops one of six photographs of frost; we cannot ship them, so the
  texture is procedural (`frost_texture`): layered blurred noise, thresholded into patches, plus branching
  ice-crystal streaks, tinted pale blue. Its statistics differ from the photographs, so absolute frost accuracies
  are not comparable with ImageNet-C numbers (the ranking of models is what this eval reports).
- snow: a thresholded, zoomed Gaussian snow layer, ImageMagick-style motion blur (one-sided Gaussian line
  kernel, `motion_blur`) at a random angle in [-135, -45] degrees, added twice (once rotated by 180 degrees) to
  the image mixed with its brightened greyscale. The PNG round trip of the layer (8-bit quantisation) is skipped.

ImageNet-C works at 224 px; at other sizes, the pixel lengths (motion-blur radius and sigma, crystal sizes)
scale with the image side / 224. Randomness is per image: image `index` draws from numpy's generator seeded with
`(seed, corruption id, index)`, so a corrupted image does not depend on the batch it is in, and the severities
of one image share their random draws (ImageNet-C draws afresh for each; sharing makes severity curves smoother).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cassle.evaluate.settings import CORRUPTIONS, SEVERITIES
REFERENCE_SIZE = 224  # ImageNet-C's image side; pixel lengths below are given at this size

# make_imagenet_c.py parameter tables, one entry per severity 1..5.
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to the HSV value
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog strength, plasma wibble decay)
FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
# (layer mean, layer std, zoom, threshold, blur radius, blur sigma, image weight)
SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
_GRAY = (0.299, 0.587, 0.114)  # cv2's RGB2GRAY weights, as ImageNet-C's snow uses
_FROST_TINT = (0.80, 0.88, 1.0)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"corruptions take float image batches N x 3 x H x W in [0, 1], got {shape}")


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be one of {list(SEVERITIES)}, got {severity!r}")
    return severity


def _generators(name: str, seed: int, indices: Sequence[int]) -> list[np.random.Generator]:
    """One generator per image; shared by all severities, so severities differ only by their parameters."""
    code = CORRUPTIONS.index(name)
    return [np.random.default_rng((seed, code, int(i))) for i in indices]


def _to_tensor(arrays: list[np.ndarray], like: Tensor) -> Tensor:
    return torch.from_numpy(np.stack(arrays)).to(device=like.device, dtype=like.dtype)


def brightness(images: Tensor, severity: int) -> Tensor:
    """HSV value + c (clipped to [0, 1]) with hue and saturation kept; black pixels become grey V'."""
    c = BRIGHTNESS[_check_severity(severity) - 1]
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + c).clamp(0, 1)
    scaled = images * (new_value / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(images)).clamp(0, 1)


def plasma_fractal(size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """A size x size (power of two) diamond-square height map in [0, 1], as ImageNet-C's `plasma_fractal`."""
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal size must be a power of two >= 2, got {size}")
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]  # squares: centre = mean of 4 corners + noise
        square_sum = corners + np.roll(corners, -1, axis=0)
        square_sum = square_sum + np.roll(square_sum, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled_mean(square_sum)
        centres = grid[half:size:step, half:size:step]  # diamonds: edge midpoints from 2 corners + 2 centres
        grid[0:size:step, half:size:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1))
        grid[half:size:step, 0:size:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= wibble_decay
    grid -= grid.min()
    return grid / grid.max()


def fog(images: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    """ImageNet-C fog: add a plasma fractal, rescale by max / (max + strength)."""
    strength, decay = FOG[_check_severity(severity) - 1]
    height, width = images.shape[-2:]
    side = 1 << max(1, math.ceil(math.log2(max(height, width))))
    plasma = _to_tensor([plasma_fractal(side, decay, rng)[:height, :width] for rng in rngs], images)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images + strength * plasma[:, None]) * peak / (peak + strength)).clamp(0, 1)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Gaussian noise on a (cells + 1)^2 lattice, bicubically upsampled to H x W and scaled to [0, 1]."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, cells + 1, cells + 1)))
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0, 0].numpy()
    return (smooth - smooth.min()) / max(smooth.max() - smooth.min(), 1e-12)


def _crystal_segments(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Rows (y0, x0, angle, length): trunks at random places and angles, each with branches at +-60 degrees."""
    segments = []
    for _ in range(rng.integers(6, 12)):
        y0, x0, angle = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, math.pi)
        length = rng.uniform(40, 120) * scale
        segments.append((y0, x0, angle, length))
        for t in rng.uniform(0.15, 0.9, rng.integers(2, 6)):
            branch = angle + rng.choice([-1.0, 1.0]) * math.pi / 3
            segments.append((y0 + t * length * math.sin(angle), x0 + t * length * math.cos(angle), branch,
                             rng.uniform(0.15, 0.4) * length))
    return np.asarray(segments)


def _streaks(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Branching crystal streaks, H x W in [0, 1]: points every half pixel along each segment are splatted
    bilinearly, then blurred into thin lines with a Gaussian profile."""
    segments = _crystal_segments(rng, height, width, scale)
    levels = rng.uniform(0.5, 1.0, len(segments))
    points = [np.arange(0, length, 0.5) for length in segments[:, 3]]  # distances along each segment
    start_y, start_x, angle, level = (np.repeat(column, [len(t) for t in points]) for column in
                                      (segments[:, 0], segments[:, 1], segments[:, 2], levels))
    t = np.concatenate(points)
    y, x, value = start_y + t * np.sin(angle), start_x + t * np.cos(angle), level
    inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
    y, x, value = y[inside], x[inside], value[inside]
    y0, x0 = np.minimum(np.floor(y).astype(int), height - 2), np.minimum(np.floor(x).astype(int), width - 2)
    fy, fx = y - y0, x - x0
    canvas = np.zeros((height, width))
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(canvas, (y0 + dy, x0 + dx), value * weight)
    sigma = max(0.6, 0.9 * scale)
    lines = _gaussian_blur(torch.from_numpy(canvas)[None, None], sigma)[0, 0].numpy()
    return np.clip(lines * math.sqrt(2 * math.pi) * sigma / 2, 0, 1)  # 2 points per pixel of length


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (3 sigma radius, replicate padding) of N x C x H x W."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(images.shape[1], 1, 1, 1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(-1, 1, 1, 2 * radius + 1), groups=images.shape[1])
    return F.conv2d(rows, kernel.view(-1, 1, 2 * radius + 1, 1), groups=images.shape[1])


def frost_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural frost image 3 x H x W in [0, 1] (stands in for ImageNet-C's frost photographs).

    Three octaves of smooth noise make a cloudy ice layer; thresholding its fine-scale detail gives crystal
    patches; branching streaks give needle crystals; the result is tinted pale blue.
    """
    scale = max(height, width) / REFERENCE_SIZE
    cloud = sum(w * _smooth_noise(rng, height, width, cells) for w, cells in ((0.5, 4), (0.3, 12), (0.2, 40)))
    detail = _smooth_noise(rng, height, width, max(4, round(60 * min(1.0, scale))))
    patches = np.clip((detail - 0.5) / 0.3, 0, 1) * cloud
    texture = np.clip(0.5 * cloud + 0.5 * patches + 0.8 * _streaks(rng, height, width, scale), 0, 1)
    return texture[None] * np.asarray(_FROST_TINT)[:, None, None]


def frost(images: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    """ImageNet-C frost with procedural textures: `c0 * x + c1 * frost`, clipped."""
    image_weight, frost_weight = FROST[_check_severity(severity) - 1]
    height, width = images.shape[-2:]
    texture = _to_tensor([frost_texture(height, width, rng) for rng in rngs], images)
    return (image_weight * images + frost_weight * texture).clamp(0, 1)


def motion_blur_kernels(radius: float, sigma: float, angles: Tensor) -> Tensor:
    """N x (4R+1) x (4R+1) kernels (R = ceil(radius), centre at 2R) of ImageMagick's MotionBlurImage: a one-sided
    line of 2R + 1 taps with weights exp(-i^2 / (2 sigma^2)) (normalised), tap i at i pixels from the centre along
    `angles` (N, degrees; x to the right, y down), each tap splatted bilinearly onto the pixel grid."""
    reach = 2 * math.ceil(radius)
    taps = torch.arange(reach + 1, dtype=torch.float64)
    weights = torch.exp(-taps**2 / (2 * sigma**2))
    weights = weights / weights.sum()
    theta = torch.deg2rad(angles.to(torch.float64))[:, None]
    offset_y, offset_x = reach + taps * torch.sin(theta), reach + taps * torch.cos(theta)  # N x taps, >= 0
    kernels = torch.zeros(len(angles), 2 * reach + 1, 2 * reach + 1, dtype=torch.float64)
    y0, x0 = offset_y.floor().long(), offset_x.floor().long()
    fy, fx = offset_y - y0, offset_x - x0
    rows = torch.arange(len(angles))[:, None].expand_as(y0)
    for dy, dx, share in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        y, x = (y0 + dy).clamp(max=2 * reach), (x0 + dx).clamp(max=2 * reach)  # clamped only where share is 0
        kernels.index_put_((rows, y, x), weights * share, accumulate=True)
    return kernels


def motion_blur(layer: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """Motion-blur N x 1 x H x W with one `motion_blur_kernels` kernel per image: out(y, x) is the weighted sum
    of layer(y + i sin a, x + i cos a) over the taps i (bilinear), with edge pixels repeated outside the image."""
    kernels = motion_blur_kernels(radius, sigma, angles.cpu()).to(layer)
    reach = (kernels.shape[-1] - 1) // 2
    padded = F.pad(layer.transpose(0, 1), (reach, reach, reach, reach), mode="replicate")  # 1 x N x H x W
    return F.conv2d(padded, kernels[:, None], groups=layer.shape[0]).transpose(0, 1)


def _clipped_zoom(layer: Tensor, zoom: float) -> Tensor:
    """Zoom N x 1 x H x W by `zoom` about the centre, keeping H x W (bilinear; ImageNet-C's clipped_zoom)."""
    height, width = layer.shape[-2:]
    ch, cw = max(1, math.ceil(height / zoom)), max(1, math.ceil(width / zoom))
    top, left = (height - ch) // 2, (width - cw) // 2
    centre = layer[..., top:top + ch, left:left + cw]
    zoomed = F.interpolate(centre, size=(round(ch * zoom), round(cw * zoom)), mode="bilinear", align_corners=False)
    trim_y, trim_x = (zoomed.shape[-2] - height) // 2, (zoomed.shape[-1] - width) // 2
    return zoomed[..., trim_y:trim_y + height, trim_x:trim_x + width]


def snow(images: Tensor, severity: int, rngs: Sequence[np.random.Generator]) -> Tensor:
    """ImageNet-C snow: thresholded zoomed noise, motion-blurred, added twice onto the brightened image."""
    mean, std, zoom, threshold, radius, sigma, image_weight = SNOW[_check_severity(severity) - 1]
    height, width = images.shape[-2:]
    scale = max(height, width) / REFERENCE_SIZE
    layer = _to_tensor([rng.normal(mean, std, (1, height, width)) for rng in rngs], images)
    angles = torch.tensor([rng.uniform(-135, -45) for rng in rngs])
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, 0.0, layer).clamp(0, 1)
    layer = motion_blur(layer, max(1.0, radius * scale), max(0.5, sigma * scale), angles)
    gray = sum(w * images[:, i: i + 1] for i, w in enumerate(_GRAY))
    mixed = image_weight * images + (1 - image_weight) * torch.maximum(images, gray * 1.5 + 0.5)
    return (mixed + layer + layer.flip(-2, -1)).clamp(0, 1)


_RANDOM: dict[str, Callable[[Tensor, int, Sequence[np.random.Generator]], Tensor]] = {
    "frost": frost, "fog": fog, "snow": snow}


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0, indices: Sequence[int] | None = None
            ) -> Tensor:
    """Corrupted copies of `images` (N x 3 x H x W floats in [0, 1]) with corruption `name` at `severity`.

    `indices` (default 0..N-1) identify the images for the per-image random draws (use dataset indices to make
    a corrupted image independent of batching); the result is deterministic given (seed, name, severity, index).
    """
    _check_images(images)
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    _check_severity(severity)
    if name == "brightness":
        return brightness(images, severity)
    indices = range(images.shape[0]) if indices is None else indices
    if len(indices) != images.shape[0]:
        raise ValueError(f"corrupt: {len(indices)} indices for {images.shape[0]} images; give one per image")
    return _RANDOM[name](images, severity, _generators(name, seed, indices))
