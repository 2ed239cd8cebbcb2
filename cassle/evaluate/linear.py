"""The linear evaluation protocol (paper A.2, Table 2) on frozen, un-normalised features, and `cassle eval linear`.

Classification: L2-regularised multinomial logistic regression, for a penalty w over the N fit samples

    sum_i CE(W x_i + b, y_i) + w * ||W||_F^2            (the bias b is NOT penalised)

which is scikit-learn's `LogisticRegression(C=1 / (2 w))` (multinomial, intercept unpenalised), solved by Newton-CG
in the span of the centred samples, the whole path of penalties from one eigendecomposition
(`cassle.evaluate.logistic`).

Regression (r2): ridge regression, sum_i ||W x_i + b - y_i||^2 + w * ||W||_F^2 (bias unpenalised; scikit-learn's
`Ridge(alpha=w)`), solved exactly for the whole grid from one eigendecomposition of the centred Gram matrix.

Protocol: fit on train for every penalty of the grid (45 values log-spaced in [1e-6, 1e5]), score on val, keep the
best (ties: the smallest penalty, as the authors' strict `>` over an ascending grid), refit on train + val starting
from the chosen model, and report the test score once.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cassle.core import observe
from cassle.core.devices import resolve_device
from cassle.core.io import file_sha256, write_json
from cassle.core.provenance import provenance
from cassle.data import get_dataset
from cassle.evaluate.command import backbone_from_args, eval_record
from cassle.evaluate.features import feature_options, split_features
from cassle.evaluate.logistic import LinearModel, LogisticProblem, SolverSettings, logistic_path
from cassle.evaluate.metrics import check_metric, pearson_r2, score
from cassle.evaluate.settings import REGRESSION_METRICS

__all__ = ["PENALTIES", "LinearModel", "SolverSettings", "linear_probe", "run", "score"]

SPLIT_NAMES = ("train", "val", "test")
PENALTIES: tuple[float, ...] = tuple(torch.logspace(-6, 5, 45, dtype=torch.float64).tolist())
"""The authors' grid: `torch.logspace(-6, 5, 45)`."""

Features = Mapping[str, Tensor]


def _ridge_path(x: Tensor, y: Tensor, penalties: Sequence[float]) -> list[LinearModel]:
    """Exact ridge solutions for every penalty (float64), from one eigendecomposition of the centred Gram matrix."""
    x64, y64 = x.double(), y.double().reshape(len(y), -1)
    x_mean, y_mean = x64.mean(0), y64.mean(0)
    xc = x64 - x_mean
    eigenvalues, eigenvectors = torch.linalg.eigh(xc.T @ xc)
    eigenvalues = eigenvalues.clamp_min(0)
    projected = eigenvectors.T @ (xc.T @ (y64 - y_mean))
    models = []
    for penalty in penalties:
        weight = (eigenvectors @ (projected / (eigenvalues + penalty)[:, None])).T
        models.append(LinearModel(weight.to(x.dtype), (y_mean - weight @ x_mean).to(x.dtype)))
    return models


def _check_splits(splits: Mapping[str, Features], regression: bool) -> None:
    """Raise ValueError naming the split and the problem: missing keys, empty, mismatched sizes or dims."""
    dims = {}
    for name, split in splits.items():
        if not isinstance(split, Mapping) or not {"x", "y"} <= set(split):
            raise ValueError(f"split '{name}' must be a mapping with keys 'x' (N x D features) and 'y' (targets)")
        x, y = split["x"], split["y"]
        if x.dim() != 2:
            raise ValueError(f"split '{name}': features must be N x D, got shape {tuple(x.shape)}")
        if len(x) == 0:
            raise ValueError(f"split '{name}' is empty (0 samples); every split needs at least one sample")
        if len(y) != len(x):
            raise ValueError(f"split '{name}': {len(x)} feature rows but {len(y)} targets; they must match")
        if not regression and (y.dim() != 1 or y.is_floating_point()):
            raise ValueError(f"split '{name}': classification targets must be a 1-D integer tensor, got "
                             f"{y.dtype} of shape {tuple(y.shape)}; use --metric r2 for regression targets")
        if not torch.isfinite(x).all():
            raise ValueError(f"split '{name}': features contain NaN or infinity")
        dims[name] = x.shape[1]
    if len(set(dims.values())) > 1:
        raise ValueError(f"feature dimensions differ between splits: {dims}; all splits must come from one model")


def linear_probe(
    train: Features,
    val: Features,
    test: Features,
    metric: str,
    penalties: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    warm_start: bool = True,
    dtype: torch.dtype = torch.float32,
    settings: SolverSettings = SolverSettings(),
    progress: bool = True,
    return_models: bool = False,
) -> dict[str, Any]:
    """Run the linear protocol: sweep `penalties` on train, select on val, refit on train + val, score test.

    `train`/`val`/`test` are `{"x": N x D features, "y": targets}` (integer labels, or N x K floats for `r2`).
    `warm_start`: each classification fit starts from the previous penalties' solutions (the sweep runs from the
    strongest penalty to the weakest); otherwise from zero. `dtype`: the features' precision and that of the
    solver's Hessian-vector products (its objective and gradient are float64). Returns the metric, the test score
    (`test`), the chosen `penalty`, `val_scores` (one per penalty, in grid order), `penalties`, the solver's Newton
    iterations and Hessian-vector products; for `r2` also the authors' correlation-based R2 (`test_r2_authors`,
    `val_scores_r2_authors`). `return_models` adds the fitted `models` (grid order) and the refit `final`.
    """
    check_metric(metric)
    regression = metric in REGRESSION_METRICS
    _check_splits({"train": train, "val": val, "test": test}, regression)
    grid = sorted(float(p) for p in (PENALTIES if penalties is None else penalties))
    if not grid or any(not (p > 0 and math.isfinite(p)) for p in grid):
        raise ValueError(f"penalties must be a non-empty list of positive finite numbers, got {list(grid)}")
    device = resolve_device(device)
    target_dtype = dtype if regression else torch.long
    tr, va, te = ({k: v.to(device, target_dtype if k == "y" else dtype) for k, v in s.items() if k in ("x", "y")}
                  for s in (train, val, test))
    trainval = {k: torch.cat([tr[k], va[k]]) for k in ("x", "y")}

    if regression:
        models = _ridge_path(tr["x"], tr["y"], grid)
    else:
        with tqdm(total=len(grid), desc="linear probe", disable=not progress) as bar:
            done = iter(range(1, len(grid) + 1))

            def fitted() -> None:  # the progress bar and the active observer (`progress/linear probe`)
                count = next(done)
                bar.update(1)
                observe.active().metrics(count, {"progress/linear probe": count / len(grid)})

            models = logistic_path(LogisticProblem(tr["x"], tr["y"]), grid, settings, warm_start, fitted)
    val_scores = [score(m.predict(va["x"]), va["y"], metric) for m in models]
    best = max(range(len(grid)), key=lambda i: (val_scores[i], -i))  # first maximum = smallest penalty
    if regression:
        final = _ridge_path(trainval["x"], trainval["y"], [grid[best]])[0]
    else:
        final = _refit(trainval, grid[best], models[best], settings)
    prediction = final.predict(te["x"])
    result: dict[str, Any] = {
        "metric": metric,
        "test": score(prediction, te["y"], metric),
        "penalty": grid[best],
        "penalties": grid,
        "val_scores": val_scores,
        "warm_start": warm_start,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "sizes": {name: len(split["x"]) for name, split in zip(SPLIT_NAMES, (tr, va, te))},
        "dim": tr["x"].shape[1],
    }
    if regression:
        result["test_r2_authors"] = pearson_r2(prediction, te["y"])
        result["val_scores_r2_authors"] = [pearson_r2(m.predict(va["x"]), va["y"]) for m in models]
    else:
        result["iterations"] = [m.iterations for m in models]
        result["refit_iterations"] = final.iterations
        result["hessian_products"] = sum(m.products for m in models) + final.products
    if return_models:
        result["models"], result["final"] = models, final
    return result


def _refit(trainval: Features, penalty: float, chosen: LinearModel, settings: SolverSettings) -> LinearModel:
    """The chosen penalty's fit on train + val, starting from the model chosen on train."""
    problem = LogisticProblem(trainval["x"], trainval["y"])
    start = [problem.coordinates(chosen)] if torch.equal(chosen.classes, problem.classes) else []
    return problem.model(*problem.fit(penalty, start, settings))


def load_feature_dir(folder: Path) -> dict[str, dict[str, Tensor]]:
    """Read `folder/{train,val,test}.pt` (each `{"x": N x D, "y": targets}`) onto the CPU."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"features folder {folder} does not exist; pass the folder holding train.pt, val.pt "
                                "and test.pt (e.g. the features/ folder of an earlier `cassle eval linear` run)")
    splits = {}
    for name in SPLIT_NAMES:
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"features file {path} is missing; --features needs train.pt, val.pt and test.pt")
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, Mapping) or not {"x", "y"} <= set(data):
            raise ValueError(f"features file {path} must hold a dict with keys 'x' (N x D features) and 'y' "
                             f"(targets), got {type(data).__name__}" + (f" with keys {sorted(data)}"
                                                                        if isinstance(data, Mapping) else ""))
        splits[name] = {"x": torch.as_tensor(data["x"]), "y": torch.as_tensor(data["y"])}
    return splits


def run(args: argparse.Namespace) -> int:
    """`cassle eval linear`: get train/val/test features, run the protocol, write OUT/metrics.json."""
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    if args.features is not None:
        if args.source is not None:
            raise ValueError(f"give either SOURCE ({args.source}) or --features ({args.features}), not both")
        if args.metric is None:
            raise ValueError("--features needs --metric (top1, class_avg or r2): the features carry no dataset")
        splits, metric = load_feature_dir(args.features), args.metric
    else:
        if args.source is None or args.dataset is None:
            raise ValueError("give SOURCE and --dataset NAME (features are extracted), or --features DIR")
        splits, metric, info = _extract_splits(args, device)
    dtype = getattr(torch, args.dtype)
    result = linear_probe(splits["train"], splits["val"], splits["test"], metric, device=device,
                          warm_start=args.warm_start, dtype=dtype, progress=not args.quiet)
    metrics = {metric: result["test"], "penalty": result["penalty"]}
    if "test_r2_authors" in result:
        metrics["r2_authors"] = result["test_r2_authors"]
    options = {"metric": metric, "penalties": result["penalties"], "warm_start": args.warm_start,
               "dtype": args.dtype}
    record = _features_record(args, metrics, options) if args.features is not None \
        else eval_record(args, "linear", metrics, info, options)
    write_json(args.out / "metrics.json", {**record, "sweep": result})
    print(f"linear {metric} on {args.dataset or args.features}: {result['test']:.4f} (penalty {result['penalty']:.3g})")
    return 0


def _features_record(args: argparse.Namespace, metrics: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """metrics.json of a probe on precomputed features: their files' digests stand for the source."""
    digests = {name: file_sha256(args.features / f"{name}.pt") for name in SPLIT_NAMES}
    source = {"kind": "features", "path": str(args.features), "sha256": digests}
    return {"task": "linear", "dataset": args.dataset, "metrics": dict(metrics), "source": source,
            "options": dict(options), "provenance": provenance({"task": "linear", **source, **options}, args.seed)}


def _extract_splits(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Features], str, dict]:
    """Features of every split of `args.dataset` from `args.source` (cached in OUT/features/), the metric, the
    source description."""
    metric = check_metric(args.metric or get_dataset(args.dataset).metric)
    backbone, info, device = backbone_from_args(args)
    options = feature_options(args, device)
    splits = {split: split_features(backbone, info, args.dataset, split, args.out, **options) for split in SPLIT_NAMES}
    return splits, metric, info
