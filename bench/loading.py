"""Image decoding and loading throughput, measured in the same run against baselines.

Two tables, for JPEG folders: CIFAR-10 (32x32, ../shared/data/cifar10-jpeg.tar.gz as extracted by tests/conftest.py
into ~/.cache/cassle/test-data; skipped when absent) and generated ImageNet-like JPEGs (short side 300-500, quality
90, written to a temporary folder).

- decode: images/s of a DataLoader that only decodes, with PIL (`Image.open().convert("RGB")`, as the datasets do)
  or torchvision.io's libjpeg-turbo `decode_jpeg` (deprecated since torchvision 0.29), in 0 and N workers; ratio to
  PIL with 0 workers.
- pipeline: images/s of the whole input pipeline for two views per image: ours (decode in the workers, collate uint8
  tensors, two `ViewSampler` calls on the batch in the main process) against the authors' design (decode plus
  per-image RandomResizedCrop + flip + to_tensor of both views in the workers, batched jitter, grayscale and blur
  in the main process: bench/augment.py's `ReferenceDesign`); ratio to the authors' design with the same workers.

Each figure is the best of `--repeats` full passes over the images after one warm-up pass (persistent workers).

    python bench/loading.py [--workers 2] [--threads 2] [--cifar-images 4096] [--generated-images 192] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from augment import ReferenceDesign, cpu_name, make_sources
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from cassle.augment import ViewSampler
from cassle.data.folders import open_rgb
from cassle.data.pretrain import collate_images

CIFAR_ROOT = Path(os.environ.get("CASSLE_TEST_DATA", Path.home() / ".cache" / "cassle" / "test-data")) / "cifar10-jpeg"


def decode_pil(path: str) -> torch.Tensor:
    return pil_to_tensor(open_rgb(path))


def decode_torchvision(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    with warnings.catch_warnings():  # deprecated since torchvision 0.29 in favour of TorchCodec (not installed)
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)


DECODERS: dict[str, Callable[[str], torch.Tensor]] = {"PIL": decode_pil, "torchvision.io": decode_torchvision}


class Files(Dataset):
    """Images of a list of files, each turned into an item by ``transform(path)``."""

    def __init__(self, paths: list[str], transform: Callable[[str], object]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.transform(self.paths[index]), 0


class ReferenceViews:
    """The authors' per-image work in a worker: decode, then two RandomResizedCrop + flip + to_tensor views."""

    def __init__(self, reference: ReferenceDesign) -> None:
        self.per_image = reference.per_image

    def __call__(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        image = open_rgb(path)
        return self.per_image(image), self.per_image(image)


def images_per_second(dataset: Dataset, batch: int, workers: int, repeats: int,
                      consume: Callable[[object], object] = lambda b: b,
                      collate: Callable | None = None) -> float:
    """Best images/s of full passes over ``dataset`` (after a warm-up pass), ``consume`` applied to each batch."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    best = 0.0
    for rep in range(repeats + 1):
        start = time.perf_counter()
        for items, _ in loader:
            consume(items)
        if rep:
            best = max(best, len(dataset) / (time.perf_counter() - start))
    return best


def generate_jpegs(folder: Path, count: int, seed: int) -> list[str]:
    """ImageNet-like JPEGs (bench/augment.py's mixed sizes: short side 300-500), quality 90."""
    paths = []
    for i, array in enumerate(make_sources("mixed", count, seed)):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(array).save(path, quality=90)
        paths.append(str(path))
    return paths


def run_case(name: str, paths: list[str], size: int, batch: int, workers: list[int], repeats: int,
             generator: torch.Generator) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    baseline = None
    for decoder, decode in DECODERS.items():
        for w in workers:
            rate = images_per_second(Files(paths, decode), batch, w, repeats, collate=collate_images)
            baseline = baseline or rate
            rows.append({"case": name, "table": "decode", "design": decoder, "workers": w, "images_per_s": rate,
                         "ratio": rate / baseline})
    sampler = ViewSampler(size)
    reference = ReferenceDesign(sampler)

    def reference_views(views: tuple[torch.Tensor, torch.Tensor]) -> None:
        for x in views:
            reference.jitter(x)
            reference.grayscale(x)
            reference.blur(x)

    def our_views(images: torch.Tensor | list[torch.Tensor]) -> None:
        sampler(images, generator=generator)
        sampler(images, generator=generator)

    for w in workers:
        ref_rate = images_per_second(Files(paths, ReferenceViews(reference)), batch, w, repeats, reference_views)
        rows.append({"case": name, "table": "pipeline", "design": "authors' design", "workers": w,
                     "images_per_s": ref_rate, "ratio": 1.0})
        for decoder, decode in DECODERS.items():
            rate = images_per_second(Files(paths, decode), batch, w, repeats, our_views, collate_images)
            rows.append({"case": name, "table": "pipeline", "design": f"{decoder} + ViewSampler", "workers": w,
                         "images_per_s": rate, "ratio": rate / ref_rate})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader workers (default 0 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes; the best is reported")
    parser.add_argument("--cifar-images", type=int, default=4096)
    parser.add_argument("--generated-images", type=int, default=192)
    parser.add_argument("--out", type=Path, default=Path("bench/results/loading.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = []
    if CIFAR_ROOT.is_dir():
        paths = sorted(str(p) for p in (CIFAR_ROOT / "train").glob("*/*.jpg"))
        paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[: args.cifar_images]]
        rows += run_case("cifar10-jpeg 32x32 -> 32 px, batch 256", paths, 32, 256, args.workers, args.repeats,
                         generator)
    else:
        print(f"CIFAR-10 JPEGs not found at {CIFAR_ROOT} (run the data tests once to extract them); skipped")
    with tempfile.TemporaryDirectory() as folder:
        paths = generate_jpegs(Path(folder), args.generated_images, seed=0)
        rows += run_case("generated ImageNet-like -> 224 px, batch 64", paths, 224, 64, args.workers,
                         args.repeats, generator)
    print(f"{'case':<44} {'table':<9} {'design':<30} {'workers':>7} {'images/s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['case']:<44} {r['table']:<9} {r['design']:<30} {r['workers']:>7} {r['images_per_s']:>9.0f} "
              f"{r['ratio']:>6.2f}")
    result = {
        "device": cpu_name(), "torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "repeats": args.repeats, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
