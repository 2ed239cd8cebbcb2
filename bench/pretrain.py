"""Training throughput of every framework x variant against the bare backbone, measured in the same run.

Each cell times the engine's own training step (`Trainer.train_step`: omega-recording augmentation of two views,
forward, loss, backward, optimiser step) on a fixed in-memory batch of uint8 images, so data loading is excluded
(bench/augment.py and the data benchmarks cover it). The baseline is the bare backbone's forward + backward +
SGD step on two pre-made views per image: the work any two-view SSL method cannot avoid.

    python bench/pretrain.py                      # CPU: narrow ResNet, 32 px, batch 64, small heads
    python bench/pretrain.py --device cuda --backbone resnet50 --image-size 224 --batch-size 256 --full-heads
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cassle.apps.engine.trainer import Trainer
from cassle.config import FRAMEWORKS, VARIANTS, resolve
from cassle.core.provenance import device_description, git_sha
from cassle.nets import build_backbone


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one call of `step` after `warmup` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_backbone_step(args: argparse.Namespace, device: torch.device):
    backbone = build_backbone(args.backbone, args.image_size <= 64, image_size=args.image_size).to(device)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=1e-3, momentum=0.9)
    views = torch.rand(2 * args.batch_size, 3, args.image_size, args.image_size, device=device)
    if device.type == "cuda":
        views = views.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def step() -> None:
        with autocast:
            loss = backbone(views).float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def method_step(framework: str, variant: str, args: argparse.Namespace, device: torch.device, work: Path):
    heads = {} if args.full_heads else {"projector.hidden_dim": 512, "projector.out_dim": 128,
                                        "predictor.hidden_dim": 512, "queue_size": 4096}
    config = resolve({"framework": framework, "variant": variant, "backbone": args.backbone,
                      "image_size": args.image_size, "batch_size": args.batch_size, "max_steps": 10**6,
                      "device": str(device), "num_workers": 0, **heads})
    images = torch.randint(0, 256, (args.batch_size, 3, args.source_size, args.source_size), dtype=torch.uint8)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(args.batch_size, dtype=torch.long))
    trainer = Trainer(config, work / f"{framework}-{variant}", dataset=dataset, progress=False)
    return lambda: trainer.train_step(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet_narrow")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=None, help="source image size (default: view size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--full-heads", action="store_true", help="the paper's projector sizes (Table 5)")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pretrain.json")
    args = parser.parse_args()
    args.source_size = args.source_size or args.image_size
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    baseline = args.batch_size / timed(bare_backbone_step(args, device), device, args.warmup, args.repeats)
    rows = [{"framework": "bare backbone", "variant": "-", "samples_per_s": baseline, "ratio": 1.0}]
    print(f"{'framework':<14}{'variant':<9}{'samples/s':>11}{'vs bare':>9}")
    print(f"{'bare backbone':<14}{'-':<9}{baseline:>11.1f}{1.0:>9.2f}")
    with tempfile.TemporaryDirectory() as work:
        for framework in args.frameworks:
            for variant in args.variants:
                seconds = timed(method_step(framework, variant, args, device, Path(work)), device, args.warmup,
                                args.repeats)
                rate = args.batch_size / seconds
                rows.append({"framework": framework, "variant": variant, "samples_per_s": rate,
                             "ratio": rate / baseline})
                print(f"{framework:<14}{variant:<9}{rate:>11.1f}{rate / baseline:>9.2f}", flush=True)
    record = {"benchmark": "pretrain", "device": device_description() if device.type == "cuda" else
              f"cpu ({args.threads} threads)", "torch": torch.__version__, "git_sha": git_sha(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "settings": vars(args) | {
                  "out": str(args.out)}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
