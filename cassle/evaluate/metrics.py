"""Scores of the linear protocol, computed in torch on any device: top-1, mean per-class accuracy, R2."""

from __future__ import annotations

import torch
from torch import Tensor

from cassle.evaluate.settings import CLASSIFICATION_METRICS, METRICS


def check_metric(metric: str) -> str:
    """Return `metric` if it is known; raise ValueError listing the allowed names otherwise."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def top1(pred: Tensor, y: Tensor) -> float:
    """Fraction of predicted labels equal to the targets (in [0, 1])."""
    return (pred == y).double().mean().item()


def class_avg(pred: Tensor, y: Tensor) -> float:
    """Mean per-class accuracy over the classes present in `y` (sklearn's `balanced_accuracy_score`)."""
    classes, index, counts = torch.unique(y, return_inverse=True, return_counts=True)
    hits = torch.zeros(len(classes), dtype=torch.float64, device=y.device)
    hits.index_add_(0, index, (pred == y).double())
    return (hits / counts).mean().item()


def r2_score(pred: Tensor, y: Tensor) -> float:
    """sklearn's `r2_score` (multioutput="uniform_average"): the mean over outputs of 1 - SSE_k / SST_k.

    An output with zero variance in `y` scores 1 if predicted exactly and 0 otherwise, as in sklearn.
    """
    pred, y = _as_matrix(pred).double(), _as_matrix(y).double()
    sse = (y - pred).square().sum(0)
    sst = (y - y.mean(0)).square().sum(0)
    constant = sst == 0
    per_output = 1 - sse / torch.where(constant, torch.ones_like(sst), sst)
    per_output = torch.where(constant, (sse == 0).double(), per_output)
    return per_output.mean().item()


def pearson_r2(pred: Tensor, y: Tensor) -> float:
    """The authors' "R2": 1 - SSE/SST of the least-squares line y = m * pred + c fitted to the flattened
    (prediction, target) pairs, which equals the squared Pearson correlation of the pooled coordinates.

    Unlike `r2_score` it forgives any affine miscalibration shared by all outputs and pools all coordinates
    (so between-output spread counts as explained variance); it is 0 when the predictions are constant.
    """
    p, t = pred.reshape(-1).double(), y.reshape(-1).double()
    p, t = p - p.mean(), t - t.mean()
    denominator = p.square().sum() * t.square().sum()
    if denominator == 0:
        return 0.0
    return ((p * t).sum().square() / denominator).item()


def score(pred_or_logits: Tensor, y: Tensor, metric: str) -> float:
    """The dataset metric of predictions (or logits, N x C, for classification) against the targets y."""
    check_metric(metric)
    if metric in CLASSIFICATION_METRICS and pred_or_logits.dim() == 2:
        pred_or_logits = pred_or_logits.argmax(-1)
    if pred_or_logits.shape[0] != y.shape[0]:
        raise ValueError(f"score: {pred_or_logits.shape[0]} predictions for {y.shape[0]} targets; they must match")
    return {"top1": top1, "class_avg": class_avg, "r2": r2_score}[metric](pred_or_logits, y)


def _as_matrix(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1)
