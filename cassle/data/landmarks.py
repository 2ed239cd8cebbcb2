"""300 Faces In-the-Wild (300W): 68 facial landmarks per image, regressed from a square face crop.

torch and PIL are imported where landmarks and images are read: the workflow plan checks roots without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.data.errors import LayoutError
from cassle.data.layout import Sample, Transform, list_images, require
from cassle.data.splits import ShuffledSplit

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from cassle.data.folders import ImageFiles

FOLDERS = ("01_Indoor", "02_Outdoor")
NUM_LANDMARKS = 68


def read_pts(path: Path) -> torch.Tensor:
    """Landmarks [68, 2] (x, y in pixels) of an ibug `.pts` file (`version`, `n_points`, then `{ x y ... }`)."""
    import torch

    try:
        text = path.read_text()
        body = text[text.index("{") + 1 : text.index("}")]
        points = torch.tensor([float(value) for value in body.split()], dtype=torch.float64).view(-1, 2)
    except (OSError, ValueError, RuntimeError) as error:
        raise LayoutError(f"cannot read landmarks file {path}: {error}") from error
    if points.shape[0] != NUM_LANDMARKS:
        raise LayoutError(f"{path} holds {points.shape[0]} landmarks, expected {NUM_LANDMARKS}")
    return points


def crop_to_landmarks(sample: Sample) -> tuple[Image.Image, torch.Tensor]:
    """(square crop around the landmarks' bounding box, target): the target is the 136 landmark coordinates
    (x1, y1, x2, ...) relative to the crop, divided by its side and then L2-normalised as one vector.

    Resizing or centre-cropping the square crop to any square size leaves this target unchanged."""
    import torch

    from cassle.data.folders import open_rgb

    path, points = sample
    image = open_rgb(path)
    low, high = points.min(0).values, points.max(0).values
    side = max(1, round(float((high - low).max())))
    left, top = (round(float(c) - side / 2) for c in (low + high) / 2)
    crop = image.crop((left, top, left + side, top + side))
    relative = (points - torch.tensor([left, top], dtype=points.dtype)) / side
    return crop, torch.nn.functional.normalize(relative.flatten(), dim=0).float()


@dataclass(frozen=True)
class Faces300WSource:
    """`root/{01_Indoor,02_Outdoor}/*.png` with a `.pts` file of the same name beside each image."""

    split_rule: ShuffledSplit

    def scan(self, root: Path) -> list[Path]:
        require(root, *FOLDERS)
        images = [path for folder in FOLDERS for path in list_images(root / folder)]
        if not images:
            raise LayoutError(f"{root / FOLDERS[0]} and {root / FOLDERS[1]} hold no images")
        missing = [path.with_suffix(".pts") for path in images if not path.with_suffix(".pts").exists()]
        if missing:
            raise LayoutError(f"{len(missing)} image(s) lack a landmarks file, e.g. {missing[0]}")
        return images

    def load(
        self, root: Path, split: str, transform: Transform | None = None, *, skip_corrupt: bool | None = None
    ) -> ImageFiles:
        from cassle.data.folders import ImageFiles

        images = self.scan(root)
        chosen = [images[i] for i in self.split_rule.indices(split, len(images))]
        samples = [(path, read_pts(path.with_suffix(".pts"))) for path in chosen]
        return ImageFiles(
            samples, [], transform, skip_corrupt=skip_corrupt, name=f"{root} ({split})", load_image=crop_to_landmarks
        )

    def probe(self, root: Path) -> dict[str, int]:
        return {"all": len(self.scan(root))}
