"""`cassle eval sensitivity` (paper Figs 6, 8-10): how sensitive each representation stage is to each augmentation.

For batches of centre-cropped images x (shuffled, 256 per batch, the partial last batch dropped when a full one
exists) and one augmentation t at a time (applied with p = 1, the others off; ViewSampler with the run's
augmentation strengths), the features of x and t(x) at every backbone stage (flattened maps) and, for runs with a
projector, at the projector output are compared with the in-batch InfoNCE of the authors' script:

    InfoNCE = CE(normalize(f(x)) @ normalize(f(t(x))).T / T, arange(B)) * 2T,   T = 0.2

(rows: original images; positives on the diagonal; the factor 2T is MoCo-v3's loss scaling the authors reuse).
Higher values mean the stage separates an image from its augmented copy more: more augmentation-sensitive. The
CASSLE projector gets the true omega of t(x) and the identity omega (crop [0.5, 0.5, 1, 1], zeros elsewhere) for
x. The reported value per (augmentation, stage) is the mean over batches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cassle.augment import OMEGA_DIM, OMEGA_SLICES, ViewSampler
from cassle.core.io import atomic_savefig, read_json
from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.features import eval_transform, load_split
from cassle.evaluate.load import load_method
from cassle.evaluate.settings import AUGMENTATIONS, TEMPERATURE
from cassle.nets import Backbone, Normalize

PROJECTOR_STAGE = "projector"
# ViewSampler probabilities that switch every augmentation off; one of them is set to 1 per augmentation.
_ALL_OFF = {"flip_p": 0.0, "jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0}
_SWITCH_ON = {"color": "jitter_p", "flip": "flip_p", "grayscale": "gray_p", "blur": "blur_p"}
Project = Callable[[Tensor, Tensor], Tensor]


def infonce(a: Tensor, b: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """In-batch InfoNCE of rows of `a` against rows of `b` (positives: same index), both flattened and
    L2-normalised, times 2T as the authors' script."""
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"infonce needs two batches of the same size >= 2, got {a.shape[0]} and {b.shape[0]}")
    a, b = F.normalize(a.flatten(1).float(), dim=1), F.normalize(b.flatten(1).float(), dim=1)
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(a @ b.T / temperature, labels) * (2 * temperature)


def identity_omega(n: int, device: torch.device | str | None = None) -> Tensor:
    """omega of an un-augmented image: crop [0.5, 0.5, 1, 1] (the whole image), zeros elsewhere."""
    omega = torch.zeros(n, OMEGA_DIM, device=device)
    omega[:, OMEGA_SLICES["crop"]] = torch.tensor([0.5, 0.5, 1.0, 1.0], device=device)
    return omega


def augment_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """ViewSampler keyword arguments of a run's augmentation strengths (the paper's defaults without a config)."""
    if config is None:
        return {}
    keys = ("crop_scale", "crop_ratio", "flip_p", "jitter_p", "jitter", "gray_p", "blur_p", "blur_sigma")
    return {key: tuple(v) if isinstance(v := config[f"augment.{key}"], list) else v for key in keys}


def single_augmentation_sampler(name: str, size: int, settings: Mapping[str, Any] | None = None) -> ViewSampler:
    """A ViewSampler applying only augmentation `name` (p = 1) to square images of side `size`.

    Everything but `crop` keeps the whole image (scale and ratio 1); `identity` changes nothing.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}")
    options = {**(settings or {}), **_ALL_OFF}
    if name != "crop":
        options.update(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    if name in _SWITCH_ON:
        options[_SWITCH_ON[name]] = 1.0
    return ViewSampler(size, **options)


def _stages(backbone: Backbone, normalize: nn.Module, project: Project | None, x: Tensor, omega: Tensor
            ) -> dict[str, Tensor]:
    stages = backbone.forward_stages(normalize(x))
    if project is not None:
        stages[PROJECTOR_STAGE] = project(stages["pooled"], omega)
    return stages


def batch_loader(data: Dataset, batch_size: int, seed: int, workers: int = 0, drop_partial: bool = True
                 ) -> DataLoader:
    """Shuffled (seeded) batches; with `drop_partial`, the partial last batch is dropped when the split holds a
    full batch (in-batch InfoNCE depends on the batch size)."""
    if len(data) < 2:
        raise ValueError(f"the split has {len(data)} image(s); in-batch comparisons need at least 2")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, num_workers=workers,
                      drop_last=drop_partial and len(data) >= batch_size)


@torch.inference_mode()
def stage_sensitivity(
    backbone: Backbone, normalize: nn.Module, loader: DataLoader, samplers: Mapping[str, ViewSampler], *,
    project: Project | None = None, device: torch.device | str = "cpu", seed: int = 0,
    temperature: float = TEMPERATURE, progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Mean InfoNCE between original and augmented views, ``{augmentation: {stage: value}}``.

    `project(features, omega)` adds the projector stage (omega: N x 14). View parameters come from one CPU
    generator seeded with `seed`, so results do not depend on the device.
    """
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, dict[str, float]] = {name: {} for name in samplers}
    batches = 0
    for images, _ in tqdm(loader, desc="sensitivity", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        x = images.to(device)
        original = _stages(backbone, normalize, project, x, identity_omega(len(x), device))
        for name, sampler in samplers.items():
            views, omega = sampler(x, generator)
            augmented = _stages(backbone, normalize, project, views, omega)
            for stage, features in original.items():
                loss = infonce(features, augmented[stage], temperature).item()
                totals[name][stage] = totals[name].get(stage, 0.0) + loss
        batches += 1
    return {name: {stage: total / batches for stage, total in per.items()} for name, per in totals.items()}


def flatten_metrics(result: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"infonce/<augmentation>/<stage>": value}``."""
    return {f"infonce/{aug}/{stage}": value for aug, per in result.items() for stage, value in per.items()}


def unflatten_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Inverse of `flatten_metrics` (keys in their original order)."""
    result: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        kind, aug, stage = key.split("/")
        if kind == "infonce":
            result.setdefault(aug, {})[stage] = value
    return result


def save_figure(figure: Any, out: Path, stem: str) -> list[str]:
    """Save `figure` as OUT/stem.png and OUT/stem.pdf (atomically) and close it; returns the file names."""
    import matplotlib.pyplot as plt

    names = [f"{stem}.png", f"{stem}.pdf"]
    for name in names:
        atomic_savefig(figure, out / name, bbox_inches="tight")
    plt.close(figure)
    return names


def plot_sensitivity(results: Mapping[str, Mapping[str, Mapping[str, float]]], out: Path) -> list[str]:
    """The paper's Fig 6: InfoNCE vs stage, one panel per augmentation, one line per labelled result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    augmentations = list(dict.fromkeys(aug for result in results.values() for aug in result))
    fig, axes = plt.subplots(1, len(augmentations), figsize=(3.2 * len(augmentations), 3.2), squeeze=False,
                             sharey=True)
    for ax, aug in zip(axes[0], augmentations):
        for label, result in results.items():
            per_stage = result.get(aug, {})
            ax.plot(list(per_stage), list(per_stage.values()), marker="o", label=label)
        ax.set_title(aug)
        ax.set_xlabel("stage")
        ax.tick_params(axis="x", labelrotation=45)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"InfoNCE (T={TEMPERATURE})")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, out, "sensitivity")


def _run_label(info: Mapping[str, Any]) -> str:
    config = info.get("config")
    return f"{config['framework']} {config['variant']}" if config else Path(info["path"]).stem


def _compared(path: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(label, result) of an earlier `cassle eval sensitivity` output (its folder or metrics.json)."""
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--compare {path}: no sensitivity metrics.json there; pass the --out folder of an "
                                "earlier `cassle eval sensitivity` run")
    record = read_json(file)
    if record.get("task") != "sensitivity":
        raise ValueError(f"--compare {path}: {file} holds task {record.get('task')!r}, not 'sensitivity'")
    return record.get("options", {}).get("label") or str(path), unflatten_metrics(record["metrics"])


def run(args: argparse.Namespace) -> int:
    """Measure, write OUT/metrics.json and OUT/sensitivity.{png,pdf}."""
    compared = dict(_compared(path) for path in args.compare)  # fail early on a bad --compare
    backbone, info, device = backbone_from_args(args)
    project: Project | None = None
    normalize: nn.Module = Normalize(info["mean"], info["std"]).to(device)
    if info["kind"] == "run":
        method = load_method(args.source, device)
        backbone, normalize, project = method.backbone, method.normalize, method.project
    size = info["image_size"]
    settings = augment_settings(info["config"])
    samplers = {name: single_augmentation_sampler(name, size, settings) for name in args.augmentations}
    data = load_split(args.dataset, args.data_root, args.split, eval_transform(size), args.max_images)
    result = stage_sensitivity(backbone, normalize, batch_loader(data, args.batch_size, args.seed, args.workers),
                               samplers, project=project, device=device, seed=args.seed,
                               temperature=args.temperature, progress=not args.quiet)
    label = args.label or _run_label(info)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = plot_sensitivity({label: result, **compared}, args.out)
    options = {"label": label, "split": args.split, "augmentations": list(args.augmentations),
               "temperature": args.temperature, "batch_size": args.batch_size, "augment": settings,
               "compare": [str(p) for p in args.compare], "figures": figures}
    path = write_eval_metrics(args, "sensitivity", flatten_metrics(result), info, options)
    print(f"sensitivity on {args.dataset}/{args.split}: InfoNCE per stage of {', '.join(args.augmentations)}; "
          f"figure {figures[0]} -> {path}")
    return 0
