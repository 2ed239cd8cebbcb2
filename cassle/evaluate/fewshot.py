"""`cassle eval fewshot` (AugSelf's few-shot table): N-way K-shot episodes on frozen features.

Protocol (AugSelf's `transfer_few_shot.py`): features of every image of the chosen splits (Resize + CenterCrop,
no TenCrop); classes with at most K images are dropped; each episode draws N classes, then K support and up to
Q query images per class (all images after the K support ones when a class has fewer than K + Q), without
replacement, from one seeded numpy generator; a logistic regression (scikit-learn, liblinear, default C,
one-vs-rest as liblinear did in the authors' scikit-learn) is fitted on the raw support features and scored on
the queries. Reported: the mean query accuracy over the episodes (a fraction in [0, 1]) and its 95% interval
half-width 1.96 * std / sqrt(episodes) (population std, ddof=0, numpy's default).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.features import eval_transform, feature_options, split_features


@dataclass(frozen=True)
class Episode:
    """Row indices into the feature matrix and episode labels 0..N-1 of one task."""

    support: np.ndarray
    support_y: np.ndarray
    query: np.ndarray
    query_y: np.ndarray


def class_indices(labels: np.ndarray, shots: int) -> dict[int, np.ndarray]:
    """Indices of every class with more than `shots` images (the others cannot give a query)."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): np.flatnonzero(labels == c) for c, n in zip(classes, counts) if n > shots}


def sample_episode(by_class: dict[int, np.ndarray], ways: int, shots: int, queries: int,
                   rng: np.random.Generator) -> Episode:
    """One N-way K-shot task with up to `queries` queries per class."""
    if len(by_class) < ways:
        raise ValueError(f"{ways}-way {shots}-shot episodes need {ways} classes with more than {shots} images, "
                         f"the features have {len(by_class)}; lower --ways or --shots, or use more data")
    keys = sorted(by_class)
    chosen = rng.choice(len(keys), size=ways, replace=False)
    parts: dict[str, list[np.ndarray]] = {"support": [], "support_y": [], "query": [], "query_y": []}
    for label, position in enumerate(chosen):
        order = rng.permutation(by_class[keys[position]])
        support, query = order[:shots], order[shots:shots + queries]
        parts["support"].append(support)
        parts["support_y"].append(np.full(len(support), label))
        parts["query"].append(query)
        parts["query_y"].append(np.full(len(query), label))
    return Episode(**{name: np.concatenate(values) for name, values in parts.items()})


def episode_accuracy(x: np.ndarray, episode: Episode) -> float:
    """Query accuracy of a one-vs-rest logistic regression (liblinear) fitted on the support features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    # liblinear is binary only: one-vs-rest is what the authors' `LogisticRegression(solver='liblinear')` did on the
    # scikit-learn of their time (newer releases refuse multiclass liblinear instead).
    classifier = OneVsRestClassifier(LogisticRegression(solver="liblinear"))
    classifier.fit(x[episode.support], episode.support_y)
    return float((classifier.predict(x[episode.query]) == episode.query_y).mean())


def mean_and_interval(accuracies: np.ndarray) -> tuple[float, float]:
    """(mean, 1.96 * std / sqrt(n)) with the population std (ddof=0)."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no episode accuracies to summarise; run at least one task")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


def few_shot(x: np.ndarray, labels: np.ndarray, ways: int, shots: int, queries: int, tasks: int, seed: int,
             progress: bool = True) -> dict[str, Any]:
    """Run `tasks` seeded episodes; returns accuracy (mean), ci95, std, tasks and the number of usable classes."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries), ("tasks", tasks)):
        if value < 1:
            raise ValueError(f"few-shot {name} must be >= 1, got {value}")
    if ways < 2:
        raise ValueError(f"few-shot episodes need at least 2 ways (classes), got {ways}")
    by_class = class_indices(labels, shots)
    rng = np.random.default_rng(seed)
    accuracies = np.array([
        episode_accuracy(x, sample_episode(by_class, ways, shots, queries, rng))
        for _ in tqdm(range(tasks), desc=f"{ways}-way {shots}-shot", disable=not progress, file=sys.stderr)
    ])
    mean, interval = mean_and_interval(accuracies)
    return {"accuracy": mean, "ci95": interval, "std": float(accuracies.std()), "tasks": tasks,
            "classes": len(by_class), "ways": ways, "shots": shots, "queries": queries}


def run(args: argparse.Namespace) -> int:
    """Features of the pooled splits, then the episodes of every --shots setting; writes metrics.json."""
    backbone, info, device = backbone_from_args(args)
    transform = eval_transform(info["image_size"])
    options = feature_options(args, device)
    parts = [split_features(backbone, info, args.dataset, split, args.out, transform=transform, **options)
             for split in dict.fromkeys(args.splits)]
    labels = torch.cat([part["y"] for part in parts])
    if labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"dataset {args.dataset!r} has {tuple(labels.shape[1:])}-dimensional float targets; "
                         "few-shot episodes need class labels")
    x = torch.cat([part["x"] for part in parts]).numpy()
    metrics = {f"{args.ways}way_{shots}shot": few_shot(x, labels.numpy(), args.ways, shots, args.queries, args.tasks,
                                                       args.seed + shots, progress=not args.quiet)
               for shots in args.shots}
    options_record = {"splits": args.splits, "ways": args.ways, "shots": args.shots, "queries": args.queries,
                      "tasks": args.tasks}
    path = write_eval_metrics(args, "fewshot", metrics, info, options_record)
    summary = ", ".join(f"{name} {100 * m['accuracy']:.2f} +- {100 * m['ci95']:.2f}%" for name, m in metrics.items())
    print(f"few-shot on {args.dataset}: {summary} -> {path}")
    return 0
