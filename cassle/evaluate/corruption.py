"""`cassle eval corruption` (paper Table 8): a linear classifier trained on clean features, tested on corrupted images.

The linear protocol (`cassle.evaluate.linear.linear_probe`: penalty chosen on val, refit on train + val) runs on
clean train/val/test features; the chosen penalty is then used for every corrupted test set: `linear_probe` with
that single penalty refits the same classifier (the objective is strictly convex, so the refit equals the clean
one up to the solver's tolerance) and scores it on the corrupted test features. Corruptions are ImageNet-C's
weather set (`cassle.evaluate.corruptions`), applied to the centre-cropped [0, 1] test images before normalisation.

Metrics: `clean`, `<corruption>/<severity>`, `<corruption>` (mean over severities, Table 8's number),
`severity/<s>` (mean over corruptions) and `mean` (over all corrupted sets), in the dataset's metric.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from cassle.data import get_dataset
from cassle.evaluate.command import backbone_from_args, write_eval_metrics
from cassle.evaluate.corruptions import corrupt
from cassle.evaluate.features import (
    cached_features,
    eval_transform,
    extract_features,
    feature_key,
    load_split,
    split_features,
)
from cassle.evaluate.linear import linear_probe
from cassle.nets import Normalize


class CorruptedSplit(Dataset):
    """Items (corrupt(image), label) of a dataset of ([0, 1] image tensor, label); deterministic per index."""

    def __init__(self, data: Dataset, corruption: str, severity: int, seed: int = 0) -> None:
        self.data, self.corruption, self.severity, self.seed = data, corruption, severity, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        image, label = self.data[index]
        return corrupt(image[None], self.corruption, self.severity, self.seed, [index])[0], label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.corruption}, severity={self.severity}, seed={self.seed})"


def summarize(clean: float, scores: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """Flat metrics from the clean score and the scores per (corruption, severity) (module docstring)."""
    corruptions = list(dict.fromkeys(name for name, _ in scores))
    severities = sorted({severity for _, severity in scores})
    metrics = {"clean": clean, **{f"{name}/{severity}": value for (name, severity), value in scores.items()}}
    for name in corruptions:
        values = [value for (n, _), value in scores.items() if n == name]
        metrics[name] = sum(values) / len(values)
    for severity in severities:
        values = [value for (_, s), value in scores.items() if s == severity]
        metrics[f"severity/{severity}"] = sum(values) / len(values)
    metrics["mean"] = sum(scores.values()) / len(scores)
    return metrics


def _corrupted_features(args: argparse.Namespace, backbone: Any, info: Mapping[str, Any], name: str, severity: int
                        ) -> dict[str, Tensor]:
    transform = eval_transform(info["image_size"])
    tag = f"test-{name}-{severity}"
    key = feature_key(info, args.dataset, "test", transform, max_images=args.max_images, corruption=name,
                      severity=severity, corruption_seed=args.seed)

    def compute() -> dict[str, Tensor]:
        data = CorruptedSplit(load_split(args.dataset, args.data_root, "test", transform, args.max_images), name,
                              severity, args.seed)
        return extract_features(backbone, data, args.batch_size, args.device, normalize=Normalize(info["mean"],
                                info["std"]), workers=args.workers, progress=not args.quiet, desc=f"features {tag}")

    return cached_features(args.out, tag, compute, key)


def corruption_scores(args: argparse.Namespace, backbone: Any, info: Mapping[str, Any], metric: str,
                      corruptions: Sequence[str], severities: Sequence[int]
                      ) -> tuple[dict[str, Any], dict[tuple[str, int], float]]:
    """The clean linear protocol's result and the score of its classifier on every (corruption, severity) of the
    test split, for a backbone (anything with `stage_names` and a forward to features) described by `info`."""
    common = dict(root=args.data_root, batch_size=args.batch_size, device=args.device, workers=args.workers,
                  max_images=args.max_images, progress=not args.quiet)
    train, val, test = (split_features(backbone, info, args.dataset, split, args.out, **common)
                        for split in ("train", "val", "test"))
    clean = linear_probe(train, val, test, metric, penalties=args.penalties, device=args.device,
                         progress=not args.quiet)
    scores = {}
    for name in corruptions:
        for severity in severities:
            corrupted = _corrupted_features(args, backbone, info, name, severity)
            result = linear_probe(train, val, corrupted, metric, penalties=[clean["penalty"]], device=args.device,
                                  progress=False)
            scores[name, severity] = result["test"]
    return clean, scores


def run(args: argparse.Namespace) -> int:
    """Fit the clean linear classifier, score every corruption x severity, write OUT/metrics.json."""
    metric = get_dataset(args.dataset).metric
    if metric not in ("top1", "class_avg"):
        raise ValueError(f"dataset {args.dataset!r} is scored with {metric!r}; the corruption eval needs a "
                         "classification dataset (top1 or class_avg), e.g. imagenet100")
    backbone, info, _ = backbone_from_args(args)
    clean, scores = corruption_scores(args, backbone, info, metric, args.corruptions, sorted(set(args.severities)))
    options = {"metric": metric, "penalty": clean["penalty"], "penalties": clean["penalties"], "corruptions": list(args.corruptions),
               "severities": sorted(set(args.severities)), "corruption_seed": args.seed}
    metrics = summarize(clean["test"], scores)
    path = write_eval_metrics(args, "corruption", metrics, info, options)
    per_corruption = "  ".join(f"{name} {metrics[name]:.4f}" for name in dict.fromkeys(n for n, _ in scores))
    print(f"corruption on {args.dataset}: clean {metrics['clean']:.4f}  {per_corruption} -> {path}")
    return 0
