"""`cassle eval detection`: VOC/COCO-style AP against hand-computed values and a loop reference, the frozen C4
Faster R-CNN, and the command end to end on a tiny VOC-layout folder."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_iou as torchvision_box_iou
from torchvision.transforms.v2.functional import horizontal_flip

from cassle.apps.engine.trainer import pretrain
from cassle.config import resolve
from cassle.data.detection import VOC_CLASSES
from cassle.evaluate import detection, task_parser
from cassle.evaluate.voc_ap import COCO_IOU_THRESHOLDS, average_precision, box_iou, evaluate_detections
from cassle.nets import IMAGENET_MEAN, IMAGENET_STD, build_backbone

CPU = torch.device("cpu")


def _gt(boxes, labels, difficult=None) -> dict[str, torch.Tensor]:
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return target


def _det(boxes, labels, scores) -> dict[str, torch.Tensor]:
    return {**_gt(boxes, labels), "scores": torch.tensor(scores, dtype=torch.float32)}


# --- AP ---------------------------------------------------------------------------------------------------------

def test_box_iou_matches_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 7, 2, 2, generator=generator) * 50
    a, b = (torch.cat([c.min(1).values, c.max(1).values], 1).double() for c in corners)
    np.testing.assert_allclose(box_iou(a.numpy(), b.numpy()), torchvision_box_iou(a, b).numpy(), rtol=1e-12)


def test_average_precision_hand_computed() -> None:
    # 4 positives; detections in score order: TP, FP, TP, FP, FP.
    recall = np.array([1, 1, 2, 2, 2]) / 4
    precision = np.array([1 / 1, 1 / 2, 2 / 3, 2 / 4, 2 / 5])
    # envelope: 1 up to recall 0.25, 2/3 up to 0.5, then nothing
    assert average_precision(recall, precision) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    # 11-point: recall >= 0, 0.1, 0.2 -> 1; >= 0.3, 0.4, 0.5 -> 2/3; above 0.5 -> 0
    assert average_precision(recall, precision, eleven_point=True) == pytest.approx((3 + 3 * 2 / 3) / 11)


def test_ground_truth_as_predictions_scores_one() -> None:
    targets = [_gt([[0, 0, 10, 10], [20, 5, 40, 30]], [1, 2]), _gt([[3, 3, 9, 12]], [2])]
    predictions = [_det(t["boxes"].tolist(), t["labels"].tolist(), [0.9] * len(t["labels"])) for t in targets]
    result = evaluate_detections(predictions, targets, num_classes=2)
    assert result["AP"] == result["AP50"] == result["AP75"] == 1.0
    assert result["per_class_AP50"] == {1: 1.0, 2: 1.0}


def test_shifted_boxes_follow_the_iou_thresholds() -> None:
    # 10 x 10 boxes; shifting by 1 px gives IoU 90/110 = 0.818, by 2 px 80/120 = 0.667.
    targets = [_gt([[0, 0, 10, 10]], [1]), _gt([[0, 0, 10, 10]], [1])]
    predictions = [_det([[1, 0, 11, 10]], [1], [0.9]), _det([[2, 0, 12, 10]], [1], [0.8])]
    result = evaluate_detections(predictions, targets, num_classes=1)
    # t in 0.50..0.65: both true positives -> AP 1; t in 0.70..0.80: TP then FP -> recall 1/2 at precision 1
    # -> AP 0.5; t >= 0.85: no true positive -> AP 0.
    expected = {t: 1.0 if t <= 0.65 else 0.5 if t <= 0.8 else 0.0 for t in COCO_IOU_THRESHOLDS}
    assert result["mAP"] == pytest.approx(expected)
    assert (result["AP50"], result["AP75"]) == (1.0, 0.5)
    assert result["AP"] == pytest.approx((4 * 1.0 + 3 * 0.5) / 10)
    # one box shifted by 2 px alone: AP 1 for the 4 thresholds up to 0.65, 0 above
    single = evaluate_detections(predictions[1:], targets[1:], num_classes=1)
    assert single["AP"] == pytest.approx(0.4)


def test_difficult_boxes_are_ignored_and_duplicates_are_false_positives() -> None:
    target = _gt([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], difficult=[False, True])
    # the best-scored detection finds the difficult box: ignored, neither TP nor FP
    on_difficult = _det([[50, 50, 60, 60], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])
    assert evaluate_detections([on_difficult], [target], num_classes=1, iou_thresholds=[0.5])["AP"] == 1.0
    plain = _gt([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1])
    # a duplicate of a found box ranks above the second true box: TP, FP, TP -> AP 0.5 + 0.5 * 2/3
    duplicate = _det([[0, 0, 10, 10], [0, 1, 10, 11], [50, 50, 60, 60]], [1, 1, 1], [0.9, 0.8, 0.7])
    result = evaluate_detections([duplicate], [plain], num_classes=1, iou_thresholds=[0.5])
    assert result["AP"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a missed difficult box does not lower recall
    only_easy = _det([[0, 0, 10, 10]], [1], [0.9])
    assert evaluate_detections([only_easy], [target], num_classes=1, iou_thresholds=[0.5])["AP"] == 1.0


def test_wrong_class_is_a_false_positive_and_classes_without_boxes_are_left_out() -> None:
    targets = [_gt([[0, 0, 10, 10]], [1])]
    predictions = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [2, 1], [0.9, 0.5])]
    result = evaluate_detections(predictions, targets, num_classes=3, iou_thresholds=[0.5])
    assert result["per_class_AP50"] == {1: 1.0, 2: None, 3: None}
    assert result["AP"] == 1.0


def _reference_voc_ap(predictions, targets, label: int, threshold: float) -> float:
    """The classic per-detection VOC loop (voc_eval.py), with its own all-point AP."""
    gts = [(t["boxes"][t["labels"] == label], t["difficult"][t["labels"] == label]) for t in targets]
    positives = sum(int((~d).sum()) for _, d in gts)
    dets = [(float(s), i, b) for i, p in enumerate(predictions)
            for b, s, lab in zip(p["boxes"], p["scores"], p["labels"]) if lab == label]
    dets.sort(key=lambda d: -d[0])
    taken = [torch.zeros(len(b), dtype=torch.bool) for b, _ in gts]
    tp, fp = [], []
    for _, image, box in dets:
        boxes, difficult = gts[image]
        if len(boxes) == 0:
            tp.append(0), fp.append(1)
            continue
        overlaps = torchvision_box_iou(box[None].double(), boxes.double())[0]
        best = int(overlaps.argmax())
        if overlaps[best] > threshold:
            if difficult[best]:
                continue
            tp.append(int(not taken[image][best])), fp.append(int(bool(taken[image][best])))
            taken[image][best] = True
        else:
            tp.append(0), fp.append(1)
    tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
    rec = np.concatenate([[0.0], tp_sum / positives, [1.0]])
    prec = np.concatenate([[0.0], tp_sum / np.maximum(tp_sum + fp_sum, 1e-12), [0.0]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return float(sum((rec[i + 1] - rec[i]) * prec[i + 1] for i in range(len(rec) - 1) if rec[i + 1] != rec[i]))


def test_matches_a_loop_reference_on_random_detections() -> None:
    rng = np.random.default_rng(0)
    targets, predictions = [], []
    for _ in range(6):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 30, (n, 2))], 1)
        labels = rng.integers(1, 4, n)
        targets.append(_gt(boxes.tolist(), labels.tolist(), (rng.random(n) < 0.25).tolist()))
        picks = rng.integers(0, max(n, 1), 8) if n else np.zeros(0, int)
        jitter = rng.normal(0, 3, (len(picks), 4))
        det_boxes = boxes[picks] + jitter if n else np.zeros((0, 4))
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        det_labels = np.where(rng.random(len(picks)) < 0.8, labels[picks] if n else 1, rng.integers(1, 4, len(picks)))
        predictions.append(_det(det_boxes.tolist(), det_labels.tolist(), rng.random(len(picks)).tolist()))
    result = evaluate_detections(predictions, targets, num_classes=3)
    for label in (1, 2, 3):
        assert result["per_class_AP50"][label] == pytest.approx(_reference_voc_ap(predictions, targets, label, 0.5))
    for threshold, value in result["mAP"].items():
        expected = np.mean([_reference_voc_ap(predictions, targets, label, threshold) for label in (1, 2, 3)])
        assert value == pytest.approx(expected)


def test_evaluate_detections_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1 prediction dicts for 2 images"):
        evaluate_detections([_det([], [], [])], [_gt([], []), _gt([], [])], num_classes=1)
    with pytest.raises(ValueError, match="no ground-truth box"):
        evaluate_detections([_det([], [], [])], [_gt([], [])], num_classes=1)


# --- the detector -------------------------------------------------------------------------------------------------

def _square_images(count: int, seed: int = 0) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Noise images (72 x 88) each with one saturated red (class 1) or blue (class 2) square of side 24-40."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        image = torch.rand(3, 72, 88, generator=generator) * 0.4
        side = int(torch.randint(24, 41, (), generator=generator))
        x, y = (int(torch.randint(0, limit - side, (), generator=generator)) for limit in (88, 72))
        label = 1 + i % 2
        image[:, y:y + side, x:x + side] = torch.tensor([1.0, 0, 0] if label == 1 else [0, 0, 1.0])[:, None, None]
        items.append((image, _gt([[x, y, x + side, y + side]], [label], [False])))
    return items


def _tiny_detector(backbone=None):
    backbone = backbone or build_backbone("resnet_narrow").requires_grad_(False).eval()
    return detection.build_detector(backbone, 2, IMAGENET_MEAN, IMAGENET_STD, train_sizes=[64, 72], test_size=72,
                                    max_size=96, rois_per_image=16)


def test_training_moves_only_the_detector_modules() -> None:
    torch.manual_seed(0)
    model = _tiny_detector()
    model.train()
    frozen = [model.backbone, model.roi_heads.box_head.res5]
    assert all(not m.training for f in frozen for m in f.module.modules())
    assert not any(p.requires_grad for f in frozen for p in f.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = detection.train_detector(model, _square_images(4), iterations=2, batch_size=2, lr=0.01,
                                       lr_steps=[1], device=CPU, warmup_iters=1, progress=False)
    assert len(history) == 2 and all(np.isfinite(history))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_keys = {k for k in before if k.startswith(("backbone.", "roi_heads.box_head.res5."))}
    assert frozen_keys and not changed & frozen_keys  # weights and BN running statistics alike
    assert any(k.startswith("rpn.") for k in changed)
    assert any(k.startswith("roi_heads.box_predictor.") for k in changed)
    assert "roi_heads.box_head.norm.running_mean" in changed


def test_predict_returns_boxes_in_original_pixels() -> None:
    torch.manual_seed(0)
    model = _tiny_detector()
    items = _square_images(3)
    predictions, targets = detection.predict(model, items, batch_size=2, device=CPU, progress=False)
    assert len(predictions) == 3 and targets[1] is items[1][1]
    for prediction in predictions:
        assert prediction["boxes"].shape[1] == 4 and len(prediction["scores"]) == len(prediction["labels"]) <= 100
        if len(prediction["boxes"]):
            assert prediction["boxes"][:, 2].max() <= 88 + 1e-4 and prediction["boxes"][:, 3].max() <= 72 + 1e-4


def test_build_detector_rejects_a_vit() -> None:
    with pytest.raises(ValueError, match="needs a ResNet backbone"):
        detection.build_detector(build_backbone("vit_small", image_size=32), 20, IMAGENET_MEAN, IMAGENET_STD)


def test_lr_factor_follows_warmup_and_steps() -> None:
    assert detection.lr_factor(0, 100, [18000, 22000]) == pytest.approx(0.001)
    assert detection.lr_factor(50, 100, [18000, 22000]) == pytest.approx(0.001 * 0.5 + 0.5)
    assert detection.lr_factor(100, 100, [18000, 22000]) == 1.0
    assert detection.lr_factor(18000, 100, [18000, 22000]) == pytest.approx(0.1)
    assert detection.lr_factor(23999, 100, [18000, 22000]) == pytest.approx(0.01)


def test_random_flip_moves_boxes_with_the_image() -> None:
    torch.manual_seed(0)
    items = _square_images(8)
    flipped = detection.RandomFlip(items)
    outcomes = set()
    for (image, target), (new_image, new_target) in zip(items, (flipped[i] for i in range(len(items)))):
        reference = horizontal_flip(tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(72, 88)))
        is_flipped = not torch.equal(new_image, image)
        outcomes.add(is_flipped)
        if is_flipped:
            assert torch.equal(new_image, image.flip(-1))
            assert torch.allclose(new_target["boxes"], reference.as_subclass(torch.Tensor))
        else:
            assert torch.equal(new_target["boxes"], target["boxes"])
    assert outcomes == {True, False}


# --- the command, end to end on a VOC-layout folder -----------------------------------------------------------------

def _write_voc_image(folder: Path, name: str, rng: np.random.Generator) -> None:
    """A JPEG with one or two coloured rectangles and its VOC XML annotation (the second one difficult)."""
    height, width = 64, 80
    pixels = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "filename").text = f"{name}.jpg"
    size = ET.SubElement(annotation, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for k in range(1 + int(rng.integers(0, 2))):
        x1, y1 = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        x2, y2 = x1 + int(rng.integers(16, 36)), y1 + int(rng.integers(16, 30))
        pixels[y1:y2, x1:x2] = (230, 30, 30) if k == 0 else (30, 30, 230)
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = VOC_CLASSES[k]
        ET.SubElement(obj, "difficult").text = str(k)
        box = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, key).text = str(value)
    Image.fromarray(pixels).save(folder / "JPEGImages" / f"{name}.jpg", quality=95)
    ET.ElementTree(annotation).write(folder / "Annotations" / f"{name}.xml")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    rng = np.random.default_rng(0)
    for year, lists in (("2007", {"trainval": 4, "test": 3}), ("2012", {"trainval": 2})):
        folder = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True)
        for image_set, count in lists.items():
            names = [f"{year}_{image_set}_{i:03d}" for i in range(count)]
            for name in names:
                _write_voc_image(folder, name, rng)
            (folder / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = resolve({"framework": "mocov2", "variant": "cassle", "backbone": "resnet_narrow", "dataset": "synthetic",
                      "max_steps": 2, "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32,
                      "queue_size": 64, "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16,
                      "num_workers": 0})
    folder = tmp_path_factory.mktemp("run")
    pretrain(config, folder, progress=False)
    return folder


def _args(source: Path, data_root: Path | None, out: Path, *extra: str) -> argparse.Namespace:
    argv = [str(source), "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet", "--iterations", "2",
            "--batch-size", "2", "--train-sizes", "64", "--test-size", "64", "--max-size", "80",
            "--rois-per-image", "16", "--warmup-iters", "1", *extra]
    if data_root is not None:
        argv += ["--data-root", str(data_root)]
    return task_parser("detection").parse_args(argv)


def test_run_writes_metrics(run_dir: Path, voc_root: Path, tmp_path: Path) -> None:
    args = _args(run_dir, voc_root, tmp_path / "out")
    assert detection.run(args) == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (record["task"], record["dataset"]) == ("detection", "voc2007")
    metrics = record["metrics"]
    assert 0 <= metrics["AP"] <= 1 and 0 <= metrics["AP75"] <= metrics["AP50"] <= 1
    assert metrics["AP"] == pytest.approx(np.mean(list(metrics["mAP_by_iou"].values())))
    assert list(metrics["mAP_by_iou"]) == [f"{t:.2f}" for t in COCO_IOU_THRESHOLDS]
    assert list(metrics["per_class_AP50"]) == list(VOC_CLASSES)
    # the fake test images hold aeroplanes (class 1) only among non-difficult boxes
    assert metrics["per_class_AP50"]["aeroplane"] is not None and metrics["per_class_AP50"]["bicycle"] is None
    assert (metrics["train_images"], metrics["test_images"]) == (6, 3)
    assert record["options"]["lr"] == pytest.approx(0.02 * 2 / 16) and record["options"]["lr_steps"] == [2, 2]
    assert record["provenance"]["seed"] == 0


def test_run_reports_a_missing_data_root(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="voc2007"):
        detection.run(_args(run_dir, tmp_path / "nowhere", tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="no data root"):
        detection.run(_args(run_dir, None, tmp_path / "out"))


def test_run_rejects_a_classification_dataset(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a detection dataset"):
        detection.run(_args(run_dir, None, tmp_path / "out", "--dataset", "synthetic"))
