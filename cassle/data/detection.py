"""PASCAL VOC detection in the VOC07 protocol: train on 07+12 trainval, test on 07 test.

torch and torchvision are imported where a split is loaded: the workflow plan checks roots without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassle.data.layout import Transform, count_lines, require

if TYPE_CHECKING:
    import torch

    from cassle.data.vision_items import VisionItems

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# Our split -> the (year, image set) lists it is made of.
VOC_SPLITS = {"train": (("2007", "trainval"), ("2012", "trainval")), "test": (("2007", "test"),)}


def _list_file(year: str, image_set: str) -> str:
    return f"VOCdevkit/VOC{year}/ImageSets/Main/{image_set}.txt"


def voc_target(annotation: dict[str, Any]) -> dict[str, torch.Tensor]:
    """torchvision detection target of a parsed VOC annotation: `boxes` [N, 4] float (x1, y1, x2, y2, 0-based:
    xmin and ymin minus 1, as detectron2 reads VOC), `labels` [N] int64 in 1..20 (0 is the background) and
    `difficult` [N] bool (the VOC07 evaluation ignores difficult objects; they are kept for training)."""
    import torch

    objects = annotation["annotation"].get("object", [])
    boxes = [[float(obj["bndbox"][key]) for key in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
    box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    box_tensor[:, :2] -= 1
    return {
        "boxes": box_tensor,
        "labels": torch.tensor([VOC_CLASSES.index(obj["name"]) + 1 for obj in objects], dtype=torch.int64),
        "difficult": torch.tensor([obj.get("difficult", "0") == "1" for obj in objects], dtype=torch.bool),
    }


@dataclass(frozen=True)
class VocSource:
    """`root/VOCdevkit/VOC2007` (trainval and test) and `root/VOCdevkit/VOC2012` (trainval), torchvision layout."""

    def required(self) -> list[str]:
        folders = [f"VOCdevkit/VOC{year}/{sub}" for year in ("2007", "2012") for sub in ("Annotations", "JPEGImages")]
        return folders + [_list_file(year, image_set) for parts in VOC_SPLITS.values() for year, image_set in parts]

    def load(self, root: Path, split: str, transform: Transform | None = None) -> VisionItems:
        from torch.utils.data import ConcatDataset
        from torchvision.datasets import VOCDetection

        from cassle.data.vision_items import VisionItems

        require(root, *self.required())
        parts = [VOCDetection(root, year=year, image_set=subset, download=False) for year, subset in VOC_SPLITS[split]]
        return VisionItems(ConcatDataset(parts), VOC_CLASSES, transform=transform, target_transform=voc_target)

    def probe(self, root: Path) -> dict[str, int]:
        require(root, *self.required())
        return {split: sum(count_lines(root / _list_file(*part)) for part in parts)
                for split, parts in VOC_SPLITS.items()}
