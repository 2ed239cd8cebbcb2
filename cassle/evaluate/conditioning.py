"""`cassle eval conditioning` (paper Fig 3): does the CASSLE projector use omega?

For positive pairs (v1, v2) = two views of one image made by the run's pretraining augmentations (ViewSampler,
omega1 and omega2 recorded), compare

    true   = cos(pi(f(v1) | omega1), pi(f(v2) | omega2))
    random = cos(pi(f(v1) | omega1), pi(f(v2) | omega3))

where omega3 is the omega2 of another image of the (shuffled) batch: the batch's omega2 rolled by one, so every
pair gets a random other image's parameters, never its own. Reported: both means, their difference and the
fraction of pairs where true > random (the paper: 92% on ImageNet-100), plus Fig 3's two histograms.

Only conditioned projectors (variant cassle) depend on omega; for a vanilla or AugSelf run both similarities are
equal by construction, so the command stops with a ValueError saying so instead of writing a meaningless 0%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from cassle.augment import ViewSampler
from cassle.core.io import write_json
from cassle.evaluate import CONDITIONING_HISTOGRAM
from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.features import eval_transform, load_split
from cassle.evaluate.load import load_method
from cassle.evaluate.sensitivity import augment_settings, batch_loader, save_figure


class Conditioned(Protocol):
    """What the measurement needs of a model: features of [0, 1] views and an omega-conditioned projector."""

    def embed(self, x: Tensor) -> Tensor: ...

    def project(self, e: Tensor, omega: Tensor) -> Tensor: ...


@torch.inference_mode()
def pair_similarities(model: Conditioned, loader: DataLoader, sampler: ViewSampler, *, num_pairs: int | None = None,
                      device: torch.device | str = "cpu", seed: int = 0, progress: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """Cosine similarities (true, random) of up to `num_pairs` positive pairs (module docstring), CPU float32."""
    generator = torch.Generator().manual_seed(seed)
    true, random = [], []
    count = 0
    for images, _ in tqdm(loader, desc="conditioning", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        if len(images) < 2:  # a last batch of one image has no other image's omega
            continue
        x = images.to(device)
        (v1, omega1), (v2, omega2) = sampler(x, generator), sampler(x, generator)
        z1 = model.project(model.embed(v1), omega1)
        e2 = model.embed(v2)
        true.append(F.cosine_similarity(z1, model.project(e2, omega2)).float().cpu())
        random.append(F.cosine_similarity(z1, model.project(e2, omega2.roll(1, dims=0))).float().cpu())
        count += len(x)
        if num_pairs is not None and count >= num_pairs:
            break
    return torch.cat(true)[:num_pairs], torch.cat(random)[:num_pairs]


def summarize(true: Tensor, random: Tensor) -> dict[str, float]:
    """Means of both similarities, their mean difference and the fraction of pairs with true > random."""
    if true.shape != random.shape or true.ndim != 1 or len(true) == 0:
        raise ValueError(f"true and random similarities must be two equally long non-empty vectors, got shapes "
                         f"{tuple(true.shape)} and {tuple(random.shape)}")
    return {
        "mean_true": true.mean().item(),
        "mean_random": random.mean().item(),
        "mean_difference": (true - random).mean().item(),
        "fraction_true_beats_random": (true > random).double().mean().item(),
        "num_pairs": len(true),
    }


HISTOGRAM_BINS = 100  # over [-1, 1], in CONDITIONING_HISTOGRAM next to metrics.json (`cassle report`'s Fig 3)


def similarity_histogram(true: Tensor, random: Tensor, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """Counts of both similarities over ``bins`` equal bins of [-1, 1] (``edges``: the ``bins + 1`` bin edges)."""
    edges = torch.linspace(-1.0, 1.0, bins + 1, dtype=torch.float64)
    return {"edges": edges.tolist(),
            **{name: torch.histc(values.double().clamp(-1, 1), bins, -1.0, 1.0).tolist()
               for name, values in (("true", true), ("random", random))}}


def plot_histograms(true: Tensor, random: Tensor, out: Path) -> list[str]:
    """Fig 3: histograms of both similarities (true green, random red) with solid lines at their means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = torch.linspace(min(true.min(), random.min()).item(), max(true.max(), random.max()).item(), 51).numpy()
    for values, colour, label in ((true, "tab:green", "true omega"), (random, "tab:red", "random omega")):
        ax.hist(values.numpy(), bins=bins, color=colour, alpha=0.5, label=label)
        ax.axvline(values.mean().item(), color=colour, linewidth=2)
    ax.set_xlabel("cosine similarity of projector outputs")
    ax.set_ylabel("pairs")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out, "conditioning")


def run(args: argparse.Namespace) -> int:
    """Measure, write OUT/metrics.json, OUT/histogram.json and OUT/conditioning.{png,pdf}."""
    if args.num_pairs < 1:
        raise ValueError(f"--num-pairs must be a positive number of pairs, got {args.num_pairs}")
    backbone, info, device = backbone_from_args(args)  # validates the source and gives its description
    del backbone
    method = load_method(args.source, device)
    if method.conditioning is None:
        raise ValueError(
            f"{args.source} is a run of variant {method.config['variant']}: its projector does not take omega, so true and "
            "random omega give identical outputs; `cassle eval conditioning` needs a CASSLE run (variant cassle)")
    size = info["image_size"]
    sampler = ViewSampler(size, **augment_settings(info["config"]))
    data = load_split(args.dataset, args.data_root, args.split, eval_transform(size), args.max_images)
    loader = batch_loader(data, args.batch_size, args.seed, args.workers, drop_partial=False)
    true, random = pair_similarities(method, loader, sampler, num_pairs=args.num_pairs, device=device,
                                     seed=args.seed, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = plot_histograms(true, random, args.out)
    write_json(args.out / CONDITIONING_HISTOGRAM, similarity_histogram(true, random))
    options = {"split": args.split, "num_pairs": args.num_pairs, "batch_size": args.batch_size, "figures": figures}
    summary = summarize(true, random)
    path = write_eval_metrics(args, "conditioning", summary, info, options)
    print(f"conditioning on {args.dataset}/{args.split}: cosine true {summary['mean_true']:.4f}, random "
          f"{summary['mean_random']:.4f}, true > random in {100 * summary['fraction_true_beats_random']:.1f}% of "
          f"{summary['num_pairs']} pairs -> {path}")
    return 0
