"""`cassle eval retrieval` (paper Fig. 5): cosine nearest neighbours among a split's frozen features.

Every image of the split (default: test) is a query against all the others (itself excluded), ranked by the
cosine similarity of the pooled backbone features (the authors: sklearn NearestNeighbors, cosine). Numbers the
paper lacks, over the queries whose class has at least one other image:
- recall@k: fraction of queries with at least one image of their class among their k nearest neighbours (the
  metric-learning "Recall@K"; not the fraction of relevant images retrieved);
- mAP@R (Musgrave et al., 2020): with R the number of other images of the query's class,
  AP@R = (1/R) * sum_{i=1..R} P@i * rel(i), where rel(i) = 1 when the i-th neighbour shares the class and P@i is
  the precision of the first i neighbours; mAP@R is its mean over queries.
Figure `retrieval.{png,pdf}`: one row per query (chosen with --queries, else seeded random ones), the query then
its k neighbours, framed green (same class) or red (other class).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cassle.core.io import atomic_savefig
from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.features import feature_options, load_split, split_features, split_transform

FIGURE_NAME = "retrieval"


def nearest_neighbours(x: Tensor, k: int, queries: Tensor | None = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """(similarities, indices), each len(queries) x k: the k rows of `x` most cosine-similar to each query row
    index (default: every row), the query itself excluded, most similar first."""
    if not 0 < k < len(x):
        raise ValueError(f"k = {k} neighbours needs 1 <= k < the number of images ({len(x)})")
    unit = F.normalize(x.float(), dim=1)
    rows = torch.arange(len(x), device=x.device) if queries is None else queries.to(x.device)
    sims, indices = [], []
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        similarity = unit[block] @ unit.T
        similarity[torch.arange(len(block), device=x.device), block] = -float("inf")
        top = similarity.topk(k, dim=1)
        sims.append(top.values)
        indices.append(top.indices)
    return torch.cat(sims), torch.cat(indices)


def retrieval_metrics(x: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[str, Any]:
    """recall@k for every k and mAP@R (module docstring) over the queries with R >= 1."""
    if not ks or min(ks) < 1:
        raise ValueError(f"recall@k needs k values >= 1, got {list(ks)}")
    if labels.ndim != 1 or labels.is_floating_point() or len(labels) != len(x):
        raise ValueError(f"retrieval needs one integer class label per image, got labels of shape "
                         f"{tuple(labels.shape)} {labels.dtype} for {len(x)} images")
    labels = labels.to(x.device)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    relevant = counts[inverse] - 1  # R per query
    valid = torch.nonzero(relevant > 0).flatten()
    if len(valid) == 0:
        raise ValueError("no image shares its class with another one: retrieval metrics are undefined")
    depth = min(max(max(ks), int(relevant.max())), len(x) - 1)
    hits_at_k = {k: 0.0 for k in ks}
    average_precision = 0.0
    for start in range(0, len(valid), chunk):
        block = valid[start:start + chunk]
        _, neighbours = nearest_neighbours(x, depth, block, chunk)
        match = (labels[neighbours] == labels[block, None]).double()
        for k in ks:
            hits_at_k[k] += match[:, :k].amax(dim=1).sum().item()
        r = relevant[block].double()
        ranks = torch.arange(1, depth + 1, device=x.device, dtype=torch.float64)
        within_r = ranks[None, :] <= r[:, None]
        precision = match.cumsum(dim=1) / ranks
        average_precision += ((precision * match * within_r).sum(dim=1) / r).sum().item()
    result: dict[str, Any] = {f"recall@{k}": hits_at_k[k] / len(valid) for k in ks}
    result["map@r"] = average_precision / len(valid)
    result["queries"] = len(valid)
    return result


def pick_queries(n: int, chosen: Sequence[int] | None, count: int, seed: int) -> list[int]:
    """The figure's query indices: `chosen` (checked), else `count` seeded random distinct ones."""
    if chosen:
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(f"--queries {bad} are out of range for a split of {n} images (0..{n - 1})")
        return list(chosen)
    return sorted(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False).tolist())


def draw_grid(images: Mapping[int, Tensor], queries: Sequence[int], neighbours: Tensor, same: Tensor, sims: Tensor,
              out: Path) -> list[Path]:
    """Write `out`.png and `out`.pdf: row i = query i then its neighbours, framed green (same class) / red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, k = neighbours.shape
    figure, axes = plt.subplots(rows, k + 1, figsize=(1.6 * (k + 1), 1.7 * rows), squeeze=False)
    for row, query in enumerate(queries):
        cells = [(query, "black", "query")] + [
            (int(index), "tab:green" if same[row, col] else "tab:red", f"cos {sims[row, col].item():.2f}")
            for col, index in enumerate(neighbours[row])
        ]
        for ax, (index, colour, title) in zip(axes[row], cells):
            ax.imshow(images[index].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"query #{index}" if title == "query" else title, fontsize=8)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
    figure.tight_layout()
    paths = [out.with_suffix(suffix) for suffix in (".png", ".pdf")]
    for path in paths:
        atomic_savefig(figure, path, dpi=150)
    plt.close(figure)
    return paths


def run(args: argparse.Namespace) -> int:
    """Features of the split, recall@k and mAP@R over all queries, the neighbour figure; writes metrics.json."""
    backbone, info, device = backbone_from_args(args)
    # One row per image even for TenCrop datasets: the single-crop test transform for every split.
    transform = split_transform(args.dataset, "test", info["image_size"])
    features = split_features(backbone, info, args.dataset, args.split, args.out, transform=transform,
                              **feature_options(args, device))
    x, labels = features["x"].to(device), features["y"].to(device)
    metrics = retrieval_metrics(x, labels, args.recall_k)
    queries = pick_queries(len(x), args.queries, args.num_queries, args.seed)
    sims, neighbours = nearest_neighbours(x, args.k, torch.tensor(queries, device=device))
    same = labels[neighbours] == labels[torch.tensor(queries, device=device), None]
    data = load_split(args.dataset, args.data_root, args.split, transform, args.max_images)
    needed = sorted(set(queries) | set(neighbours.flatten().tolist()))
    images = {index: data[index][0] for index in needed}
    figures = draw_grid(images, queries, neighbours.cpu(), same.cpu(), sims.cpu(), Path(args.out) / FIGURE_NAME)
    metrics["figure_queries"] = queries
    metrics["figure_neighbours"] = neighbours.cpu().tolist()
    options = {"split": args.split, "k": args.k, "queries": queries, "recall_k": args.recall_k}
    path = write_eval_metrics(args, "retrieval", metrics, info, options)
    summary = ", ".join(f"{key} {100 * metrics[key]:.2f}%" for key in (*(f"recall@{k}" for k in args.recall_k),
                                                                       "map@r"))
    print(f"retrieval on {args.dataset}/{args.split}: {summary}; figure {figures[0]} -> {path}")
    return 0
