"""Procedural coloured shapes on textured backgrounds: a small deterministic dataset needing no files.

Each image shows one shape (disc, square, triangle, cross) in one colour (red, green, blue, yellow) at a random
position, scale and rotation, on a grey background with a random tint, stripe texture and pixel noise. The
joint label (shape x colour) needs both cues, the `shape` label is colour-invariant and the `color` label needs
colour: a colour-invariant representation cannot solve `joint` or `color` (the paper's flowers argument).
Everything about image i of a split follows from a numpy generator seeded with (seed, split, i), so images are
the same whatever the batch they are rendered in. Labels cycle through the classes, so every split is balanced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_pil_image

from cassle.data.synthetic_source import DEFAULT_LENGTHS, DEFAULT_SIZE

SHAPES = ("disc", "square", "triangle", "cross")
COLORS = ("red", "green", "blue", "yellow")
PALETTE = torch.tensor([[0.85, 0.12, 0.12], [0.12, 0.70, 0.18], [0.15, 0.30, 0.90], [0.90, 0.80, 0.10]])
TARGETS = ("joint", "shape", "color")
SYNTHETIC_SPLITS = ("train", "val", "trainval", "test")
# Image i of a split draws its random numbers from numpy's generator seeded with (seed, split id, i).
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


# Names of the per-image uniforms in [0, 1), in the order they are drawn.
_PARAM_NAMES = ("scale", "cx", "cy", "angle", "bright", "c0", "c1", "c2", "grey", "t0", "t1", "t2",
                "freq", "orient", "phase", "amp")


def _shape_levels(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Level functions (< 1 inside) of the shapes in the object frame, stacked on dim 1 in SHAPES order.

    The sizes give every shape about the same area (2.55 r^2), so area does not betray the shape."""
    disc = torch.sqrt(u * u + v * v) / 0.9
    square = torch.maximum(u.abs(), v.abs()) / 0.8
    edge_normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 6, math.pi * 5 / 6, math.pi * 3 / 2)]
    triangle = torch.stack([nx * u + ny * v for nx, ny in edge_normals]).amax(0) / 0.7
    cross = torch.minimum(torch.maximum(u.abs() / 0.4, v.abs()), torch.maximum(v.abs() / 0.4, u.abs()))
    return torch.stack([disc, square, triangle, cross], 1)


def render(
    params: torch.Tensor, noise: torch.Tensor, shape: torch.Tensor, color: torch.Tensor, size: int
) -> torch.Tensor:
    """uint8 images [N, 3, size, size] from per-image uniforms [N, 16], noise [N, 3, size, size] and the shape
    and colour ids [N] (all on one device)."""
    p = dict(zip(_PARAM_NAMES, params.unbind(1)))
    radius = (0.18 + 0.12 * p["scale"]) * size
    margin = 1.25 * radius  # keeps most of each shape inside the image
    cx = margin + p["cx"] * (size - 2 * margin)
    cy = margin + p["cy"] * (size - 2 * margin)
    grid = torch.arange(size, dtype=params.dtype, device=params.device) + 0.5
    ys, xs = grid[None, :, None], grid[None, None, :]
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    cos, sin = torch.cos(2 * math.pi * p["angle"])[:, None, None], torch.sin(2 * math.pi * p["angle"])[:, None, None]
    r = radius[:, None, None]
    levels = _shape_levels((cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r)
    level = levels.gather(1, shape[:, None, None, None].expand(-1, 1, size, size))
    alpha = ((1 - level) * r[:, None] + 0.5).clamp(0, 1)  # about one pixel of anti-aliased edge

    tint = 0.06 * (torch.stack([p["t0"], p["t1"], p["t2"]], 1) - 0.5)
    background = (0.3 + 0.4 * p["grey"])[:, None] + tint
    stripe_angle = math.pi * p["orient"][:, None, None]
    cycles = (1 + 3 * p["freq"])[:, None, None] * (xs * torch.cos(stripe_angle) + ys * torch.sin(stripe_angle)) / size
    texture = (0.03 + 0.09 * p["amp"])[:, None, None] * torch.sin(2 * math.pi * (cycles + p["phase"][:, None, None]))
    background = background[:, :, None, None] + texture[:, None]

    jitter = 0.12 * (torch.stack([p["c0"], p["c1"], p["c2"]], 1) - 0.5)
    foreground = (PALETTE.to(params.device)[color] * (0.75 + 0.25 * p["bright"])[:, None] + jitter)[:, :, None, None]
    image = background * (1 - alpha) + foreground * alpha + 0.04 * noise
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


class SyntheticShapes(Dataset):
    """Split `train`, `val`, `trainval` (train then val) or `test` of the shapes dataset.

    Items are (uint8 tensor [3, size, size], label), or (PIL image, label) with `as_pil=True`, or
    (transform(image), label). `target` picks the label set: `joint` (shape * 4 + colour, 16 classes),
    `shape` or `color` (4 classes each). `lengths` overrides the train/val/test sizes.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = DEFAULT_SIZE,
        target: str = "joint",
        seed: int = 0,
        lengths: Mapping[str, int] | None = None,
        as_pil: bool = False,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if split not in SYNTHETIC_SPLITS:
            raise ValueError(f"synthetic split {split!r} is unknown; choose one of {', '.join(SYNTHETIC_SPLITS)}")
        if target not in TARGETS:
            raise ValueError(f"synthetic target {target!r} is unknown; choose one of {', '.join(TARGETS)}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"synthetic image size must be an int >= 8, got {size!r}")
        lengths = {**DEFAULT_LENGTHS, **(lengths or {})}
        bad = {k: v for k, v in lengths.items() if k not in DEFAULT_LENGTHS or not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"synthetic lengths {bad} are invalid; give positive ints for keys train, val, test")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"synthetic seed must be a non-negative int, got {seed!r}")
        self.split, self.size, self.target, self.seed = split, size, target, seed
        self.as_pil, self.transform = as_pil, transform
        parts = ("train", "val") if split == "trainval" else (split,)
        self._keys = [(part, i) for part in parts for i in range(lengths[part])]

    @property
    def classes(self) -> list[str]:
        if self.target == "shape":
            return list(SHAPES)
        if self.target == "color":
            return list(COLORS)
        return [f"{color} {shape}" for shape in SHAPES for color in COLORS]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _joint(self, index: int) -> int:
        return self._keys[index][1] % (len(SHAPES) * len(COLORS))

    def label(self, index: int) -> int:
        """Label of item `index` under this dataset's `target`, without rendering it."""
        shape, color = divmod(self._joint(index), len(COLORS))
        return {"joint": self._joint(index), "shape": shape, "color": color}[self.target]

    @property
    def targets(self) -> list[int]:
        return [self.label(i) for i in range(len(self))]

    def render(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 images [len(indices), 3, size, size] of these items, rendered in one vectorised pass."""
        params = np.empty((len(indices), len(_PARAM_NAMES)))
        noise = np.empty((len(indices), 3, self.size, self.size))
        for row, index in enumerate(indices):
            split, i = self._keys[index]
            generator = np.random.default_rng((self.seed, _SPLIT_ID[split], i))
            params[row] = generator.random(len(_PARAM_NAMES))
            noise[row] = generator.standard_normal((3, self.size, self.size))
        joint = torch.tensor([self._joint(i) for i in indices], dtype=torch.int64)
        shape, color = joint // len(COLORS), joint % len(COLORS)
        return render(torch.from_numpy(params).float(), torch.from_numpy(noise).float(), shape, color, self.size)

    def __len__(self) -> int:
        return len(self._keys)

    def _item(self, image: torch.Tensor, index: int) -> tuple[Any, int]:
        out: torch.Tensor | Image.Image = to_pil_image(image) if self.as_pil else image
        return (self.transform(out) if self.transform is not None else out), self.label(index)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a synthetic split of {len(self)} items")
        index %= len(self)
        return self._item(self.render([index])[0], index)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, int]]:
        """Batched fetch used by torch's DataLoader: renders the whole batch at once."""
        return [self._item(image, index) for image, index in zip(self.render(indices), indices)]
