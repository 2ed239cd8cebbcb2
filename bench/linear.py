"""The whole linear protocol (45-penalty sweep, selection on val, refit on train + val, test) in torch against the
same protocol with scikit-learn's LogisticRegression (lbfgs, C = 1 / (2 w), same grid, same selection), in one run.

Features imitate a ResNet's pooled features at CIFAR scale: a make_classification problem pushed through a random
linear map and a ReLU (non-negative, un-normalised, correlated dimensions). Both sides run on the same float32
features with the same number of threads; scikit-learn gets max_iter=5000 like the protocol and its default tol.

    python bench/linear.py [--device cpu|cuda|all] [--threads 2] [--cases c10,c100] [--sk-tol 1e-4] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from cassle.evaluate.linear import PENALTIES, linear_probe

CASES = {  # name: (train, val, test, dim, classes, class_sep)
    "c10": (4500, 500, 2000, 512, 10, 1.0),
    "c100": (4500, 500, 2000, 512, 100, 2.0),
}
Split = dict[str, np.ndarray]


def make_features(train: int, val: int, test: int, dim: int, classes: int, sep: float, seed: int = 0) -> list[Split]:
    """ReLU features of a random linear map of a make_classification problem, split into train/val/test."""
    n = train + val + test
    z, y = make_classification(n_samples=n, n_features=dim, n_informative=dim // 4, n_redundant=0,
                               n_classes=classes, n_clusters_per_class=1, class_sep=sep, random_state=seed)
    mixing = np.random.default_rng(seed).normal(size=(dim, dim)) / np.sqrt(dim)
    x = np.maximum(z @ mixing + 0.5, 0).astype(np.float32)
    bounds = np.cumsum([0, train, val, test])
    return [{"x": x[a:b], "y": y[a:b]} for a, b in zip(bounds[:-1], bounds[1:])]


def sklearn_protocol(train: Split, val: Split, test: Split, tol: float) -> dict[str, Any]:
    """The same protocol with scikit-learn: fit each C = 1 / (2 w) on train, first best on val, refit, test."""

    def fit(split: Split, penalty: float) -> LogisticRegression:
        return LogisticRegression(C=1 / (2 * penalty), max_iter=5000, tol=tol).fit(split["x"], split["y"])

    val_scores = [fit(train, p).score(val["x"], val["y"]) for p in PENALTIES]
    best = int(np.argmax(val_scores))  # argmax returns the first maximum = the smallest penalty
    trainval = {k: np.concatenate([train[k], val[k]]) for k in ("x", "y")}
    return {"test": fit(trainval, PENALTIES[best]).score(test["x"], test["y"]), "penalty": PENALTIES[best]}


def torch_protocol(train: Split, val: Split, test: Split, device: str) -> dict[str, Any]:
    splits = [{k: torch.as_tensor(v) for k, v in s.items()} for s in (train, val, test)]
    result = linear_probe(*splits, metric="top1", device=device, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return result


def timed(fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=("cpu", "cuda", "all"),
                        help="torch device(s); all = cpu and cuda when present")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and scikit-learn's BLAS")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--sk-tol", type=float, default=1e-4, help="scikit-learn's tol (its default: 1e-4)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "linear.json",
                        help="JSON results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    rows = []
    print(f"{'case':6} {'N x D, C':18} {'impl':14} {'time s':>8} {'test acc':>9} {'penalty':>9} {'speed-up':>9}")
    for name in args.cases.split(","):
        train, val, test = make_features(*CASES[name])
        with threadpool_limits(args.threads):
            reference, sk_time = timed(lambda: sklearn_protocol(train, val, test, args.sk_tol))
        shape = f"{len(train['x'])} x {train['x'].shape[1]}, {CASES[name][4]}"
        print(f"{name:6} {shape:18} {'scikit-learn':14} {sk_time:8.2f} {reference['test']:9.4f} "
              f"{reference['penalty']:9.3g} {1:9.2f}")
        for device in devices:
            result, t = timed(lambda: torch_protocol(train, val, test, device))
            print(f"{name:6} {shape:18} {'torch ' + device:14} {t:8.2f} {result['test']:9.4f} "
                  f"{result['penalty']:9.3g} {sk_time / t:9.2f}")
            rows.append({"case": name, "train": len(train["x"]), "dim": train["x"].shape[1],
                         "classes": CASES[name][4], "device": device, "torch_s": t, "sklearn_s": sk_time,
                         "speedup": sk_time / t, "torch_test": result["test"], "sklearn_test": reference["test"],
                         "torch_penalty": result["penalty"], "sklearn_penalty": reference["penalty"],
                         "accuracy_gap_pp": 100 * (result["test"] - reference["test"]),
                         "torch_iterations": sum(result["iterations"]) + result["refit_iterations"]})
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "sklearn": sklearn.__version__, "threads": args.threads,
        "sklearn_tol": args.sk_tol, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
