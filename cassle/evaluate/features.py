"""Frozen-backbone features of a dataset split: evaluation transforms, batched extraction and an on-disk cache.

Features are cached as `OUT/features/{name}.pt` = `{"x": float32 N x D, "y": labels or targets}` (CPU tensors)
with a sidecar `OUT/features/{name}.json` = `{"key": ..., "shape": [N, D]}`. The key records what produced them
(source weights' sha256, architecture, dataset, split, transform, stage, ...): a cache whose key differs from the
caller's is not used but recomputed and overwritten, with a warning.

Transforms follow the authors' downstream protocol: Resize(size, bicubic) + CenterCrop(size) for every split,
except datasets in `TENCROP_DATASETS` (CUB-200), whose train/val/trainval features are TenCrop(size) after
Resize(size * 256 / 224) (10 rows per image, labels repeated) and whose test features are
Resize(size * 256 / 224) + CenterCrop(size).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T
from tqdm import tqdm

from cassle.core import observe
from cassle.core.devices import resolve_device
from cassle.core.io import atomic_torch_save, dumps_json, read_json, write_json
from cassle.core.observe import DatasetUse
from cassle.data import describe_dataset, get_dataset
from cassle.nets import Backbone, Normalize

TENCROP_DATASETS: frozenset[str] = frozenset({"cub200"})
TENCROP_SPLITS: tuple[str, ...] = ("train", "val", "trainval")
FeatureDict = dict[str, Tensor]
USE_KEY = "dataset_use"  # the split's description (DatasetUse fields), saved with its cached features


class StackCrops:
    """Tuple of PIL crops (TenCrop's output) -> 10 x 3 x H x W tensor in [0, 1]."""

    def __call__(self, crops: tuple[Any, ...]) -> Tensor:
        return torch.stack([T.functional.to_tensor(crop) for crop in crops])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image size must be a positive int, got {image_size!r}")


def _enlarged(image_size: int) -> int:
    """The resize before a crop of `image_size`, 256 for 224 as in the authors' CUB protocol."""
    return round(image_size * 256 / 224)


def eval_transform(image_size: int) -> T.Compose:
    """Resize(image_size, bicubic) + CenterCrop(image_size) + ToTensor (values in [0, 1], not normalised)."""
    _check_size(image_size)
    return T.Compose([T.Resize(image_size, T.InterpolationMode.BICUBIC), T.CenterCrop(image_size), T.ToTensor()])


def tencrop_transform(image_size: int) -> T.Compose:
    """Resize(image_size * 256/224, bicubic) + TenCrop(image_size): a 10 x 3 x size x size tensor per image."""
    _check_size(image_size)
    return T.Compose([T.Resize(_enlarged(image_size), T.InterpolationMode.BICUBIC), T.TenCrop(image_size),
                      StackCrops()])


def split_transform(dataset: str, split: str, image_size: int) -> T.Compose:
    """The transform the linear protocol uses for `split` of `dataset` (module docstring)."""
    if dataset not in TENCROP_DATASETS:
        return eval_transform(image_size)
    if split in TENCROP_SPLITS:
        return tencrop_transform(image_size)
    _check_size(image_size)
    return T.Compose([T.Resize(_enlarged(image_size), T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      T.ToTensor()])


def load_split(dataset: str, root: Path | str | None, split: str, transform: Callable[[Any], Any] | None,
               max_images: int | None = None, report: bool = True) -> Dataset:
    """Split `split` of a registered dataset, cut to its first `max_images` items; an empty split raises. With
    `report`, the active observer (cassle.core.observe) hears which split was read (`split_use`)."""
    if max_images is not None and max_images <= 0:
        raise ValueError(f"max_images must be a positive number of images or None (all), got {max_images}")
    spec = get_dataset(dataset)
    data = spec.load(root, split, transform)
    if max_images is not None and max_images < len(data):
        data = Subset(data, range(max_images))
    if len(data) == 0:
        raise ValueError(f"split {split!r} of dataset {dataset!r} under {root} is empty: check the data root "
                         "(`cassle data check --root ...`)")
    if report:
        observe.active().dataset(split_use(data, dataset, split, root))
    return data


def split_use(data: Dataset, dataset: str, split: str, root: Path | str | None) -> DatasetUse:
    """The loaded split `data` as an evaluation's run input."""
    spec = get_dataset(dataset)
    return describe_dataset(data, spec.name, split, spec.resolve_root(root), context="eval")


def _pool(features: Tensor) -> Tensor:
    """B x D from a stage output: spatial mean of B x C x H x W maps, token mean of B x N x D token maps."""
    if features.ndim == 4:
        return features.mean(dim=(2, 3))
    if features.ndim == 3:
        return features.mean(dim=1)
    return features


def extract_features(
    backbone: Backbone, dataset: Dataset, batch_size: int, device: str | torch.device | None = None,
    stage: str = "pooled", *, normalize: nn.Module | None = None, workers: int = 0, progress: bool = True,
    desc: str = "features",
) -> FeatureDict:
    """`{"x": float32 N x D, "y": labels}` (CPU) of a dataset of (image tensor in [0, 1], label) items.

    Images are normalised with `normalize` (default ImageNet statistics) before the backbone. 5-D batches
    (B x crops x C x H x W, e.g. TenCrop) give one row per crop, labels repeated. `stage` other than "pooled"
    (see `backbone.stage_names`) is average-pooled over space (conv maps) or tokens (ViT). The active observer hears
    the fraction done after each batch (metric `progress/<desc>`, step: images embedded).
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be a positive number of images, got {batch_size}")
    if stage not in backbone.stage_names:
        raise ValueError(f"stage {stage!r} is not one of the backbone's stages: {', '.join(backbone.stage_names)}")
    if len(dataset) == 0:
        raise ValueError("cannot extract features of an empty dataset: check the data root and the split")
    device = resolve_device(device)
    backbone = backbone.to(device).eval()
    normalize = (normalize if normalize is not None else Normalize()).to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    done = 0
    with torch.inference_mode():
        for images, targets in tqdm(loader, desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True):
            images = images.to(device, non_blocking=True)
            done += len(images)
            crops = images.shape[1] if images.ndim == 5 else 1
            images = normalize(images.flatten(0, 1) if images.ndim == 5 else images)
            out = backbone(images) if stage == "pooled" else _pool(backbone.forward_stages(images)[stage])
            xs.append(out.float().cpu())
            ys.append(torch.as_tensor(targets).repeat_interleave(crops, dim=0))
            observe.active().metrics(done, {f"progress/{desc}": done / len(dataset)})
    return {"x": torch.cat(xs), "y": torch.cat(ys)}


def feature_key(info: Mapping[str, Any], dataset: str, split: str, transform: Any, **extra: Any) -> dict[str, Any]:
    """What identifies a feature set: the source weights, the data, the transform and any `extra` option."""
    key = {"source_sha256": info["sha256"], "arch": info["arch"], "mean": info["mean"], "std": info["std"],
           "dataset": dataset, "split": split, "transform": repr(transform), **extra}
    return json.loads(dumps_json(key))


def _check_features(features: Any, name: str) -> FeatureDict:
    ok = isinstance(features, Mapping) and isinstance(features.get("x"), Tensor) \
        and isinstance(features.get("y"), Tensor) and features["x"].ndim == 2 \
        and len(features["x"]) == len(features["y"])
    if not ok:
        raise ValueError(f"features {name!r} must be a dict {{'x': N x D tensor, 'y': N labels}}, got "
                         f"{type(features).__name__}")
    return dict(features)


def _stored_key(sidecar: Path) -> Any:
    """The key recorded in a cache's sidecar; None when it is missing or unreadable."""
    try:
        return read_json(sidecar).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def cached_features(out_dir: Path | str, split: str, compute_fn: Callable[[], FeatureDict],
                    key: Mapping[str, Any] | None = None) -> FeatureDict:
    """`OUT/features/{split}.pt` if it exists and was made with the same `key`, else `compute_fn()` saved there.

    `key` (see `feature_key`) should always be given: without one an existing cache is trusted as it is.
    A cache with another key, no sidecar or unreadable content is recomputed with a warning. Writes are atomic.
    """
    path = Path(out_dir) / "features" / f"{split}.pt"
    sidecar = path.with_suffix(".json")
    wanted = None if key is None else json.loads(dumps_json(key))
    if path.is_file():
        stored = _stored_key(sidecar)
        if key is None or stored == wanted:
            try:
                return _check_features(torch.load(path, map_location="cpu", weights_only=True), split)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
                warnings.warn(f"feature cache {path} is unreadable ({error}); recomputing it", stacklevel=2)
        else:
            differs = sorted(k for k in set(wanted) | set(stored or {}) if (stored or {}).get(k) != wanted.get(k))
            warnings.warn(f"feature cache {path} was made by another source or setting (differs in: "
                          f"{', '.join(differs)}); recomputing it", stacklevel=2)
    features = _check_features(compute_fn(), split)
    sidecar.unlink(missing_ok=True)  # a crash between the two writes then leaves a cache without key: not trusted
    atomic_torch_save(features, path)
    write_json(sidecar, {"key": wanted, "shape": list(features["x"].shape)})
    return features


def split_features(
    backbone: Backbone, info: Mapping[str, Any], dataset: str, split: str, out_dir: Path | str, *,
    root: Path | str | None = None, batch_size: int = 256, device: str | torch.device | None = None,
    workers: int = 0, max_images: int | None = None, stage: str = "pooled",
    transform: Callable[[Any], Any] | None = None, wrap: Callable[[Dataset], Dataset] | None = None,
    tag: str | None = None, progress: bool = True,
) -> FeatureDict:
    """Cached features of one split of a registered dataset at the source's image size and normalisation.

    `transform` defaults to `split_transform` (the linear protocol's); `wrap` turns the transformed split into
    the dataset actually embedded (e.g. all rotations of each image); `tag` names that change in the cache key.
    The active observer hears the split read, also when the features come from the cache (which keeps its
    description).
    """
    transform = transform or split_transform(dataset, split, info["image_size"])
    key = feature_key(info, dataset, split, transform, stage=stage, max_images=max_images, tag=tag)

    def compute() -> FeatureDict:
        data = load_split(dataset, root, split, transform, max_images, report=False)
        use = split_use(data, dataset, split, root)
        desc = f"features {dataset}/{split}" + (f" ({tag})" if tag else "")
        features = extract_features(backbone, wrap(data) if wrap else data, batch_size, device, stage,
                                    normalize=Normalize(info["mean"], info["std"]), workers=workers,
                                    progress=progress, desc=desc)
        return {**features, USE_KEY: dataclasses.asdict(use)}

    features = cached_features(out_dir, split, compute, key)
    use = features.pop(USE_KEY, None)  # kept with the features: a rerun that reuses them still names its input
    if isinstance(use, dict):
        observe.active().dataset(DatasetUse(**use))
    return features


def feature_options(args: Any, device: torch.device) -> dict[str, Any]:
    """`split_features` keyword arguments from the common `cassle eval` options (see options.add_common_arguments)."""
    return {"root": args.data_root, "batch_size": args.batch_size, "device": device, "workers": args.workers,
            "max_images": args.max_images, "progress": not args.quiet}
