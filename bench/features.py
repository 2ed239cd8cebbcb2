"""Realistic features for the linear-probe benchmark: ReLU features of a random ResNet-50 on the real CIFAR-10 images.

Every one of the 60 000 CIFAR-10 JPEGs (../shared/data/cifar10-jpeg.tar.gz, or $CASSLE_CIFAR_TARBALL, as extracted by
tests/conftest.py into ~/.cache/cassle/test-data) is embedded twice by `cassle.evaluate.features.extract_features`
(the linear eval's own extraction): view 0 = Resize(40, bicubic) + CenterCrop(40) (a 2 x 2 map before the pooling);
view 1 = the mirror image, zoomed in by 1.25 (Resize(50) + CenterCrop(40)). The backbone is torchvision's ResNet-50
at its random initialisation whose BatchNorm statistics were re-estimated on 2048 images (so activations are scaled
like a trained network's); features are the 2048 pooled ReLU outputs: non-negative, un-normalised, correlated, with
a decaying spectrum. They are computed once (about 15 minutes on 2 quiet cores; on the GPU where there is one) and
cached in ~/.cache/cassle/bench/ (1 GB).

Labels: CIFAR-10's classes for 10 classes; for C classes each CIFAR class is split into C / 10 equal-sized
sub-classes by k-means (Lloyd's algorithm from a k-means++ start, float64, CPU; then balanced) on the
image's features (the mean of its two views, projected on the class's top 64 principal directions): sub-classes
that one view's features separate only partly, as a fine-grained dataset's classes. A benchmark case takes disjoint
images for train, val and test (both views of an image stay in one split) and uses the second view only when a case
needs more rows than there are images.

    python bench/features.py        # builds the cache (or reports it) and prints the spectrum of the features
"""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset
from torchvision import transforms as T

from cassle.core.threads import available_cpus
from cassle.data import get_dataset
from cassle.evaluate.features import extract_features
from cassle.nets import Normalize, build_backbone

TEST_DATA = Path(os.environ.get("CASSLE_TEST_DATA", Path.home() / ".cache" / "cassle" / "test-data"))
CIFAR_ROOT = TEST_DATA / "cifar10-jpeg"
CIFAR_TARBALL = Path(os.environ.get("CASSLE_CIFAR_TARBALL",
                                   Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"))
CACHE = Path.home() / ".cache" / "cassle" / "bench" / "cifar10-resnet50-random-40px.pt"
IMAGE_SIZE = 40
VIEWS = {
    0: T.Compose([T.Resize(IMAGE_SIZE, T.InterpolationMode.BICUBIC), T.CenterCrop(IMAGE_SIZE), T.ToTensor()]),
    1: T.Compose([T.RandomHorizontalFlip(p=1.0), T.Resize(50, T.InterpolationMode.BICUBIC), T.CenterCrop(IMAGE_SIZE),
                  T.ToTensor()]),
}


def cifar_root() -> Path:
    """The CIFAR-10 JPEG folders, extracted from ../shared when the tests have not done it yet."""
    if not (CIFAR_ROOT / "test").is_dir():
        if not CIFAR_TARBALL.exists():
            raise FileNotFoundError(f"CIFAR-10 JPEGs not found in {CIFAR_ROOT} nor {CIFAR_TARBALL}")
        TEST_DATA.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR_TARBALL) as tar:
            tar.extractall(TEST_DATA, filter="data")
    return CIFAR_ROOT


def all_images(transform: T.Compose) -> ConcatDataset:
    """The 60 000 CIFAR-10 images (train, val, test splits of the folder layout, in that order)."""
    spec, root = get_dataset("cifar10"), cifar_root()
    return ConcatDataset([spec.load(root, split, transform) for split in ("train", "val", "test")])


def random_resnet50(calibration: ConcatDataset, seed: int = 0) -> torch.nn.Module:
    """ResNet-50 at its random init, BatchNorm statistics re-estimated on 2048 images, in eval mode."""
    torch.manual_seed(seed)
    backbone = build_backbone("resnet50")
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    backbone.train()
    images = Subset(calibration, np.random.default_rng(seed).permutation(len(calibration))[:2048].tolist())
    with torch.no_grad():
        for batch, _ in DataLoader(images, batch_size=256):
            backbone(Normalize()(batch))
    return backbone.eval()


def build_cache() -> dict[str, torch.Tensor]:
    """Compute the features of both views and the CIFAR labels; save them to CACHE."""
    backbone = random_resnet50(all_images(VIEWS[0]))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    workers = max(1, min(8, available_cpus() - 1))
    views = [extract_features(backbone, all_images(VIEWS[v]), 256, device, workers=workers, desc=f"view {v}")
             for v in VIEWS]
    cache = {"x": torch.stack([v["x"] for v in views], 1), "y": views[0]["y"]}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(CACHE)
    return cache


@functools.cache
def load_cache() -> dict[str, torch.Tensor]:
    """`{"x": 60000 x 2 views x 2048, "y": CIFAR labels}`, built on first use."""
    if CACHE.exists():
        return torch.load(CACHE, weights_only=True)
    return build_cache()


def balanced_kmeans(points: torch.Tensor, k: int, seed: int, iterations: int = 100) -> np.ndarray:
    """k equal-sized clusters of `points` (N x D): Lloyd's algorithm from a k-means++ start, then each point goes to
    its nearest centre that still has room (pairs taken by increasing distance), as a dataset's balanced classes."""
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(len(points), (1,), generator=generator)]
    for _ in range(1, k):
        distances = torch.cdist(points, centres).min(1).values.square()
        centres = torch.cat([centres, points[torch.multinomial(distances, 1, generator=generator)]])
    labels = torch.cdist(points, centres).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        new = torch.cdist(points, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    room, balanced = np.full(k, -(-len(points) // k)), np.full(len(points), -1)
    for flat in torch.cdist(points, centres).flatten().argsort().numpy():
        i, j = divmod(int(flat), k)
        if balanced[i] < 0 and room[j] > 0:
            balanced[i], room[j] = j, room[j] - 1
    return balanced


@functools.cache
def class_projections() -> list[torch.Tensor]:
    """Per CIFAR class, its images' features (the mean of both views), centred, on the class's top 64 principal
    directions (float64)."""
    cache = load_cache()
    mean_views = cache["x"].mean(1).double()
    projections = []
    for c in range(10):
        members = mean_views[cache["y"] == c]
        centred = members - members.mean(0)
        projections.append(centred @ torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -64:])
    return projections


def fine_labels(classes: int, seed: int = 0) -> np.ndarray:
    """`classes` labels: each CIFAR class split into about classes / 10 k-means clusters of its images' features
    (`class_projections`): sub-classes that the features separate partly, as a fine-grained dataset's classes (its
    images' views differ from the mean)."""
    coarse = load_cache()["y"].numpy()
    if classes == 10:
        return coarse
    saved = CACHE.with_name(f"{CACHE.stem}-balanced-{classes}-{seed}.npy")
    if saved.exists():
        return np.load(saved)
    labels, next_label = np.empty_like(coarse), 0
    for c, projected in enumerate(class_projections()):
        k = classes // 10 + (c < classes % 10)
        labels[coarse == c] = next_label + balanced_kmeans(projected, k, seed + c)
        next_label += k
    np.save(saved, labels)
    return labels


def case_splits(sizes: tuple[int, int, int], classes: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """float32 features and labels of disjoint images for train, val and test (rows of `sizes`)."""
    cache = load_cache()
    labels = fine_labels(classes, seed)
    views = 1 if sum(sizes) <= len(labels) else 2
    images = np.random.default_rng(seed).permutation(len(labels))
    rows = np.stack([images * 2 + v for v in range(views)], 1).ravel()  # both views of an image adjacent
    if sum(sizes) > len(rows):
        raise ValueError(f"a case of {sum(sizes)} rows needs more than the {len(rows)} rows of the cache")
    x = cache["x"].reshape(-1, cache["x"].shape[-1])
    bounds = np.cumsum((0, *sizes))
    return [{"x": x[rows[a:b]].numpy(), "y": labels[rows[a:b] // 2]} for a, b in zip(bounds[:-1], bounds[1:])]


if __name__ == "__main__":
    data = load_cache()
    x = data["x"][:, 0]
    centred = (x - x.mean(0)).double()
    spectrum = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    print(f"features {tuple(data['x'].shape)}, zero fraction {(x == 0).float().mean():.3f}, mean {x.mean():.3f}")
    print("eigenvalues / largest at ranks 1, 10, 100, 500, 1000, 2000:",
          [f"{(spectrum[r - 1] / spectrum[0]).item():.2e}" for r in (1, 10, 100, 500, 1000, 2000)])
