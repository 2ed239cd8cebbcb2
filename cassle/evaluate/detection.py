"""`cassle eval detection` (the paper's Table 3): Faster R-CNN on a frozen pretrained ResNet, VOC07 protocol.

The detector follows detectron2's R50-C4 (the MoCo detection recipe the authors ran), rebuilt with torchvision:
the stem and res2-res4 (`layer1..3`) are the backbone, one stride-16 feature map; RoIAlign cuts 14 x 14 regions
that res5 (`layer4`, first block stride 2) turns into 7 x 7 maps, followed by an extra BatchNorm (detectron2's
`Res5ROIHeadsExtraNorm`), average pooling and the linear class / box predictor. The pretrained weights (stem,
res2-res5) stay fixed, BatchNorm included (always in eval mode, no gradients): only the RPN, the extra norm and
the predictor learn, as in the paper ("we only train the object detector modules"). Train on VOC 07+12
trainval, test on VOC 07 test; AP (mean over IoU 0.50:0.95), AP50 and AP75 from `cassle.evaluate.voc_ap`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.transforms.functional import to_tensor
from tqdm import tqdm

from cassle.core import observe
from cassle.data import describe_dataset, get_dataset
from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.settings import (
    BASE_BATCH,
    BASE_LR,
    ITERATIONS,
    LR_STEPS,
    MAX_SIZE,
    ROIS_PER_IMAGE,
    TEST_SIZE,
    TRAIN_SIZES,
    WARMUP_FACTOR,
    WARMUP_ITERS,
)
from cassle.evaluate.voc_ap import evaluate_detections
from cassle.nets import Backbone, ResNetBackbone

ANCHOR_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512)
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
ROI_SIZE = 14
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
LOSS_WINDOW = 20  # iterations averaged for the reported final training loss


class Frozen(nn.Module):
    """A pretrained module kept fixed: no gradients, BatchNorm always in eval mode, run without autograd."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Frozen:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)


class Res5Head(nn.Module):
    """The C4 box head: frozen res5 on the RoI features, a trainable BatchNorm, global average pooling."""

    def __init__(self, res5: nn.Module, channels: int) -> None:
        super().__init__()
        self.res5 = Frozen(res5)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.res5(x)).mean(dim=(2, 3))


class MultiScaleTransform(GeneralizedRCNNTransform):
    """Resize the shorter side to a random choice of `train_sizes` in training, to `test_size` in eval mode
    (longer side at most `max_size`), normalise with the backbone's mean / std, batch with padding."""

    def __init__(self, train_sizes: Sequence[int], test_size: int, max_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(tuple(train_sizes), max_size, list(mean), list(std))
        self.train_sizes, self.test_size = tuple(train_sizes), test_size

    def train(self, mode: bool = True) -> MultiScaleTransform:
        self.min_size = self.train_sizes if mode else (self.test_size,)
        return super().train(mode)


def _out_channels(module: nn.Module) -> int:
    """Channels a ResNet stage outputs (those of its last BatchNorm)."""
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def build_detector(
    backbone: Backbone,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    train_sizes: Sequence[int] = TRAIN_SIZES,
    test_size: int = TEST_SIZE,
    max_size: int = MAX_SIZE,
    rois_per_image: int = ROIS_PER_IMAGE,
) -> FasterRCNN:
    """A C4 Faster R-CNN on the (frozen) ResNet `backbone` for `num_classes` object classes (plus background);
    `rois_per_image` proposals per training image are sampled for the box head (a quarter of them positive)."""
    if not isinstance(backbone, ResNetBackbone):
        raise ValueError(f"detection needs a ResNet backbone (the C4 detector splits res2-res4 / res5), got "
                         f"{backbone.name!r}; evaluate a resnet18, resnet50 or resnet_narrow run")
    if num_classes < 1 or not train_sizes or min(*train_sizes, test_size, max_size, rois_per_image) < 1:
        raise ValueError(f"build_detector: num_classes ({num_classes}), train sizes ({list(train_sizes)}), test size "
                         f"({test_size}), max size ({max_size}) and RoIs per image ({rois_per_image}) must be "
                         "positive, and train sizes non-empty")
    net = backbone.net
    trunk = Frozen(nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3))
    trunk.out_channels = _out_channels(net.layer3)
    res5_channels = _out_channels(net.layer4)
    model = FasterRCNN(
        trunk,
        rpn_anchor_generator=AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ASPECT_RATIOS,)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=ROI_SIZE, sampling_ratio=0),
        box_head=Res5Head(net.layer4, res5_channels),
        box_predictor=FastRCNNPredictor(res5_channels, num_classes + 1),
        # detectron2's C4 proposal counts (torchvision's defaults are FPN's 2000/2000 and 1000/1000).
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=1000,
        box_batch_size_per_image=rois_per_image,
    )
    model.transform = MultiScaleTransform(train_sizes, test_size, max_size, mean, std)
    return model


def lr_factor(iteration: int, warmup_iters: int, milestones: Sequence[int], warmup_factor: float = WARMUP_FACTOR) \
        -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from `warmup_factor`, then x0.1 at each milestone."""
    warmup = 1.0
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        warmup = warmup_factor * (1 - alpha) + alpha
    return warmup * 0.1 ** sum(iteration >= m for m in milestones)


class RandomFlip(Dataset):
    """Detection items (image tensor C x H x W, target dict with `boxes`) flipped left-right with probability 1/2."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.dataset[index]
        if torch.rand(()) < 0.5:
            width = image.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            image, target = image.flip(-1), {**target, "boxes": boxes}
        return image, target


def _collate(batch: list[tuple[Any, Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(zip(*batch))


def _to_device(images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]], device: torch.device) \
        -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    return ([image.to(device, non_blocking=True) for image in images],
            [{key: value.to(device, non_blocking=True) for key, value in t.items()} for t in targets])


def _batches(dataset: Dataset, batch_size: int, workers: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """Endless shuffled batches (reshuffled every pass) of flipped-at-random items."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(RandomFlip(dataset), batch_size=batch_size, sampler=RandomSampler(dataset, generator=generator),
                        num_workers=workers, collate_fn=_collate, drop_last=len(dataset) >= batch_size,
                        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    while True:
        yield from loader


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def _optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD over the trainable parameters; no weight decay on norm layers (detectron2's WEIGHT_DECAY_NORM 0)."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in norm_ids], "weight_decay": weight_decay},
              {"params": [p for p in trainable if id(p) in norm_ids], "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum)


def train_detector(
    model: FasterRCNN,
    dataset: Dataset,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    lr_steps: Sequence[int],
    device: torch.device,
    warmup_iters: int = WARMUP_ITERS,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    workers: int = 0,
    seed: int = 0,
    amp: bool = True,
    progress: bool = True,
) -> list[float]:
    """Train the detector's trainable parts for `iterations` SGD steps; returns the total loss of every step. The
    active observer (cassle.core.observe) hears the loss and learning rate every LOSS_WINDOW iterations.

    `dataset` yields (image tensor in [0, 1], target dict with `boxes` (x1, y1, x2, y2 pixels) and `labels`).
    """
    optimizer = _optimizer(model, lr, momentum, weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, warmup_iters, lr_steps))
    batches = _batches(dataset, batch_size, workers, seed)
    model.train()
    history: list[float] = []
    bar = tqdm(range(iterations), desc="detection: train", disable=not progress, dynamic_ncols=True)
    for iteration in bar:
        images, targets = _to_device(*next(batches), device)
        with _autocast(device, amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise FloatingPointError(f"detection training diverged at iteration {iteration} ({parts}); "
                                     f"lower --lr (now {lr}) or raise --warmup-iters (now {warmup_iters})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(loss.item())
        if iteration % LOSS_WINDOW == 0:
            bar.set_postfix(loss=f"{history[-1]:.3f}", lr=f"{schedule.get_last_lr()[0]:.2g}")
            observe.active().metrics(iteration + 1, {"train/loss": history[-1], "train/lr": schedule.get_last_lr()[0]})
    return history


def predict(
    model: FasterRCNN, dataset: Dataset, *, batch_size: int, device: torch.device, workers: int = 0,
    amp: bool = True, progress: bool = True,
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Detections (boxes in original image pixels, scores, labels; on CPU) and targets of every item of `dataset`."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        pin_memory=torch.cuda.is_available())
    predictions: list[dict[str, Tensor]] = []
    targets: list[dict[str, Tensor]] = []
    with torch.inference_mode():
        for images, batch_targets in tqdm(loader, desc="detection: test", disable=not progress, dynamic_ncols=True):
            with _autocast(device, amp):
                outputs = model([image.to(device, non_blocking=True) for image in images])
            predictions += [{key: value.float().cpu() if value.is_floating_point() else value.cpu()
                             for key, value in output.items()} for output in outputs]
            targets += list(batch_targets)
    return predictions, targets


def _split(args: argparse.Namespace, split: str) -> tuple[Dataset, list[str]]:
    """Split `split` of --dataset as (image tensor, target) items, first --max-images only; and the class names."""
    spec = get_dataset(args.dataset)
    dataset = spec.load(args.data_root, split, transform=to_tensor)
    classes = list(getattr(dataset, "classes", None) or range(1, spec.num_classes + 1))
    if args.max_images is not None:
        dataset = Subset(dataset, range(min(args.max_images, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"dataset '{args.dataset}' split {split!r} under {args.data_root} has no images; check "
                         "its image lists (ImageSets/Main/*.txt for VOC) or --max-images")
    observe.active().dataset(describe_dataset(dataset, spec.name, split, spec.resolve_root(args.data_root), "eval"))
    return dataset, [str(name) for name in classes]


def _lr_steps(args: argparse.Namespace) -> list[int]:
    if args.lr_steps is not None:
        return list(args.lr_steps)
    return [round(args.iterations * step / ITERATIONS) for step in LR_STEPS]


def run(args: argparse.Namespace) -> int:
    """Train the detector on the train split, evaluate on test, write OUT/metrics.json."""
    spec = get_dataset(args.dataset)
    if "detection" not in spec.kinds or spec.num_classes is None:
        raise ValueError(f"dataset '{args.dataset}' is not a detection dataset; use --dataset voc2007")
    for name in ("iterations", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    (train_set, _), (test_set, classes) = _split(args, "train"), _split(args, "test")
    backbone, info, device = backbone_from_args(args)
    lr = args.lr if args.lr is not None else BASE_LR * args.batch_size / BASE_BATCH
    lr_steps = _lr_steps(args)
    torch.manual_seed(args.seed)
    model = build_detector(backbone, spec.num_classes, info["mean"], info["std"], args.train_sizes,
                           args.test_size, args.max_size, args.rois_per_image).to(device)
    progress = not args.quiet
    history = train_detector(model, train_set, iterations=args.iterations, batch_size=args.batch_size, lr=lr,
                             lr_steps=lr_steps, device=device, warmup_iters=args.warmup_iters,
                             momentum=args.momentum, weight_decay=args.weight_decay, workers=args.workers,
                             seed=args.seed, amp=args.amp, progress=progress)
    predictions, targets = predict(model, test_set, batch_size=args.batch_size, device=device,
                                   workers=args.workers, amp=args.amp, progress=progress)
    result = evaluate_detections(predictions, targets, spec.num_classes, eleven_point=args.eleven_point)
    metrics = {
        "AP": result["AP"], "AP50": result["AP50"], "AP75": result["AP75"],
        "mAP_by_iou": {f"{t:.2f}": value for t, value in result["mAP"].items()},
        "per_class_AP50": {classes[label - 1]: value for label, value in result["per_class_AP50"].items()},
        "final_train_loss": sum(history[-LOSS_WINDOW:]) / len(history[-LOSS_WINDOW:]),
        "train_images": len(train_set), "test_images": len(test_set),
    }
    options = {"iterations": args.iterations, "batch_size": args.batch_size, "lr": lr, "lr_steps": lr_steps,
               "warmup_iters": args.warmup_iters, "momentum": args.momentum, "weight_decay": args.weight_decay,
               "train_sizes": list(args.train_sizes), "test_size": args.test_size, "max_size": args.max_size,
               "rois_per_image": args.rois_per_image, "amp": args.amp, "eleven_point": args.eleven_point,
               "detector": "faster_rcnn_c4_frozen_trunk"}
    path = write_eval_metrics(args, "detection", metrics, info, options)
    print(f"detection on {args.dataset}: AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  "
          f"AP75 {metrics['AP75']:.4f} -> {path}")
    return 0
