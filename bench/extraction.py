"""Feature extraction of the linear eval against the bare backbone forward on the same device, in one run.

- bare forward: images/s of `backbone(batch)` (inference mode) on normalised batches already on the device, the
  ceiling of any extraction;
- extraction: images/s of `cassle.evaluate.features.extract_features` (the linear eval's own loop) over the real
  CIFAR-10 JPEGs (../shared/data/cifar10-jpeg.tar.gz as extracted by the tests into ~/.cache/cassle/test-data) with
  the linear protocol's transform (Resize(size, bicubic) + CenterCrop + ToTensor), data loading in the loop: JPEG
  decoding and resizing in N DataLoader workers (0 = in the main process), normalisation and the forward on the
  device, features copied back to the CPU; the DataLoader's start-up is included, as in an eval.

The ratio extraction / bare says how much of the backbone's speed the eval keeps (1 = loading fully hidden).
Each figure is the best of `--repeats` passes after a warm-up pass. `--busy` measures with another process busy
on the same cores (bench/linear.py's neighbour).

    python bench/extraction.py [--device cpu|cuda] [--arch resnet50] [--image-size 224] [--batch-size 64]
                               [--images 256] [--workers 0,1,2] [--threads N] [--busy] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch
from augment import cpu_name
from features import cifar_root
from linear import busy_neighbour
from torch.utils.data import Subset

from cassle.core.threads import available_cpus
from cassle.data import get_dataset
from cassle.evaluate.features import extract_features, split_transform
from cassle.nets import Normalize, build_backbone


def best_rate(images: int, repeats: int, step: callable, sync: callable) -> float:
    """images/s of the fastest of `repeats` calls of `step` after one warm-up call."""
    step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return images / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50", help="registered backbone (default: resnet50)")
    parser.add_argument("--image-size", type=int, default=224, help="evaluation image size (default: 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward (default: 64)")
    parser.add_argument("--images", type=int, default=256, help="CIFAR-10 test images per pass (default: 256)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="torch threads (default: the CPUs this process was given)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per figure (default: 2)")
    parser.add_argument("--busy", action="store_true", help="measure with another process busy on the cores")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extraction.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    backbone = build_backbone(args.arch).to(device).eval()
    data = get_dataset("cifar10").load(cifar_root(), "test", split_transform("cifar10", "test", args.image_size))
    data = Subset(data, range(args.images))
    batches = [Normalize()(torch.rand(args.batch_size, 3, args.image_size, args.image_size)).to(device)
               for _ in range(-(-args.images // args.batch_size))]

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                backbone(batch)

    rows = []
    load_start = os.getloadavg()[0]
    with busy_neighbour(args.busy, args.threads):
        bare_rate = best_rate(len(batches) * args.batch_size, args.repeats, bare, sync)
        print(f"bare forward {args.arch} {args.image_size}px batch {args.batch_size} on {device}: "
              f"{bare_rate:.1f} images/s", flush=True)
        for workers in (int(w) for w in args.workers.split(",")):
            rate = best_rate(args.images, args.repeats, lambda: extract_features(
                backbone, data, args.batch_size, device, workers=workers, progress=False), sync)
            rows.append({"workers": workers, "images_per_s": rate, "ratio": rate / bare_rate})
            print(f"extraction, {workers} workers: {rate:.1f} images/s, {rate / bare_rate:.2f} x the bare forward",
                  flush=True)
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "threads": args.threads, "busy": args.busy, "arch": args.arch,
        "image_size": args.image_size, "batch_size": args.batch_size, "images": args.images,
        "cpu_count": os.cpu_count(), "load_average_1min": [load_start, os.getloadavg()[0]],
        "bare_images_per_s": bare_rate, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
