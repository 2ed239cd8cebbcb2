"""Detection average precision: the PASCAL VOC evaluation, at the COCO IoU thresholds 0.50:0.95.

Per class and IoU threshold t, as VOC's `voc_eval` (and detectron2's `PascalVOCDetectionEvaluator`) does:
detections of the class, over all images, are taken in decreasing score order; each is matched to the
ground-truth box of its class and image with the highest IoU. If that IoU is not above t, or the box was already
matched, the detection is a false positive; if the box is `difficult`, the detection is ignored (neither true nor
false positive); otherwise it is a true positive. Difficult boxes do not count among the positives.
AP is the area under the precision envelope (all-point interpolation, VOC2010+), or the VOC2007 11-point
average with `eleven_point=True`. A threshold's mAP is the mean AP over the classes that have at least one
non-difficult box; `AP` is the mean of the mAPs over the thresholds, `AP50` and `AP75` those at 0.5 and 0.75.
Boxes are (x1, y1, x2, y2) with continuous coordinates (area = width x height, no VOC "+1" pixel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

Detections = Mapping[str, torch.Tensor]  # boxes [N, 4], scores [N], labels [N]
GroundTruth = Mapping[str, torch.Tensor]  # boxes [M, 4], labels [M], optional difficult [M] bool


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (x1, y1, x2, y2) boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return intersection / np.maximum(union, np.finfo(np.float64).tiny)


def average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool = False) -> float:
    """Area under the precision envelope of a precision/recall curve (points in detection order)."""
    if eleven_point:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _numpy(values: torch.Tensor, dtype: type) -> np.ndarray:
    return values.detach().cpu().numpy().astype(dtype)


def _check_lengths(predictions: Sequence[Detections], targets: Sequence[GroundTruth]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"evaluate_detections: {len(predictions)} prediction dicts for {len(targets)} images; "
                         "give one prediction dict (boxes, scores, labels) per ground-truth image")


def _match_best(predictions: Sequence[Detections], targets: Sequence[GroundTruth]) -> dict[str, np.ndarray]:
    """Every detection's label, score, best IoU with a same-class ground-truth box of its image, and that box's
    index among all boxes (concatenated over images); plus every box's label and difficult flag."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "score", "iou", "box", "gt_label", "difficult")}
    offset = 0
    for pred, target in zip(predictions, targets):
        gt_boxes, gt_labels = _numpy(target["boxes"], np.float64).reshape(-1, 4), _numpy(target["labels"], np.int64)
        difficult = target.get("difficult")
        columns["gt_label"].append(gt_labels)
        columns["difficult"].append(np.zeros(len(gt_labels), bool) if difficult is None else _numpy(difficult, bool))
        boxes, labels = _numpy(pred["boxes"], np.float64).reshape(-1, 4), _numpy(pred["labels"], np.int64)
        iou = np.where(labels[:, None] == gt_labels[None, :], box_iou(boxes, gt_boxes), -np.inf)
        has_gt = iou.shape[1] > 0
        columns["iou"].append(iou.max(1) if has_gt else np.full(len(boxes), -np.inf))
        columns["box"].append(offset + (iou.argmax(1) if has_gt else np.zeros(len(boxes), np.int64)))
        columns["label"].append(labels)
        columns["score"].append(_numpy(pred["scores"], np.float64))
        offset += len(gt_labels)
    return {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in columns.items()}


def _class_ap(iou: np.ndarray, box: np.ndarray, difficult: np.ndarray, positives: int, threshold: float,
              eleven_point: bool) -> float:
    """AP of one class at one IoU threshold from its detections in decreasing score order."""
    hit = iou > threshold
    ignored = hit & difficult[box]
    eligible = np.flatnonzero(hit & ~ignored)
    true_positive = np.zeros(len(iou), bool)
    true_positive[eligible[np.unique(box[eligible], return_index=True)[1]]] = True  # the first hit of each box
    counted = ~ignored
    tp = np.cumsum(true_positive[counted])
    fp = np.cumsum(~true_positive[counted])
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(tp / positives, precision, eleven_point)


def evaluate_detections(
    predictions: Sequence[Detections],
    targets: Sequence[GroundTruth],
    num_classes: int,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    eleven_point: bool = False,
) -> dict[str, Any]:
    """VOC-style AP of `predictions` against `targets` (one dict each per image; labels 1..num_classes).

    Returns {"AP", "AP50", "AP75" (None when 0.5 / 0.75 are not among the thresholds), "mAP" (threshold -> mAP),
    "per_class_AP50" (class label -> AP at 0.5, None for classes without non-difficult boxes)}, all in [0, 1].
    """
    _check_lengths(predictions, targets)
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or not all(0 <= t < 1 for t in thresholds):
        raise ValueError(f"IoU thresholds must be a non-empty list of numbers in [0, 1), got {thresholds}")
    found = _match_best(predictions, targets)
    difficult = found["difficult"].astype(bool)
    per_class: dict[int, list[float] | None] = {}
    for label in range(1, num_classes + 1):
        positives = int(np.sum((found["gt_label"] == label) & ~difficult))
        if positives == 0:
            per_class[label] = None
            continue
        mine = np.flatnonzero(found["label"] == label)
        order = mine[np.argsort(-found["score"][mine], kind="stable")]
        iou, box = found["iou"][order], found["box"][order].astype(np.int64)
        per_class[label] = [_class_ap(iou, box, difficult, positives, t, eleven_point) for t in thresholds]
    scored = [aps for aps in per_class.values() if aps is not None]
    if not scored:
        raise ValueError("evaluate_detections: no ground-truth box that is not difficult among the targets; "
                         f"AP is undefined (labels must lie in 1..{num_classes})")
    mean_ap = dict(zip(thresholds, np.mean(scored, axis=0).tolist()))
    at_50 = thresholds.index(0.5) if 0.5 in thresholds else None
    return {
        "AP": float(np.mean(list(mean_ap.values()))),
        "AP50": mean_ap.get(0.5),
        "AP75": mean_ap.get(0.75),
        "mAP": mean_ap,
        "per_class_AP50": {label: None if aps is None or at_50 is None else aps[at_50]
                           for label, aps in per_class.items()},
    }
