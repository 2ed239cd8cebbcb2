"""The whole linear protocol (45-penalty sweep, selection on val, refit on train + val, test) of `linear_probe`
against the same protocol with scikit-learn's LogisticRegression (lbfgs, C = 1 / (2 w), same grid, same selection,
same refit), in one run, on shapes that mirror the paper's downstream datasets (train n x 2048 x classes).

Features: ReLU features of a random ResNet-50 on the real CIFAR-10 images (bench/features.py; computed once and
cached in ~/.cache/cassle/bench). Both sides get the same float32 arrays and the same number of threads
(`--threads`, default: the CPUs this process was given, `cassle.core.threads.available_cpus`; every BLAS and OpenMP
library is capped at that from the start: `limit_threads`); scikit-learn gets
max_iter=5000 like the protocol and its default tol. Per case the script reports both wall times, the speed-up,
both test scores and chosen penalties, and at every penalty scikit-learn fitted the relative difference of the
objectives (ours - sklearn) / sklearn, both evaluated in float64 on the original features (<= 0: ours is lower).

scikit-learn's sweep is timed whole (all 45 fits) on the three smallest shapes. On the larger ones it fits every K-th
penalty of the grid (`--sk-every K`: 4 for CUB, 11 for CIFAR-10 and Food-101; 1 = all 45) from index `--sk-from I`
(default 0), always the strongest (1e5) and the penalty the torch sweep chose with its neighbours, and its sweep time
is ESTIMATED: each penalty's fit time interpolated in log w between the fitted ones, summed, plus the refit (always
measured). The estimate has no known direction: fit times are not monotone in w (on DTD's shape they rise from
1.1 s at 1e-6 to 9 s at w = 10 and fall to 0.5 s at 1e5: lbfgs stops after ~50 iterations at weak penalties, far
above their minimum), which is why every sweep now samples the whole grid.
`--busy` runs the measurement while another process keeps the same cores busy (a torch matmul loop on `--threads`
threads, as a training job would): the shared-machine figure.

GPU column (`--device cuda` or `all`, bench/gpu.sh): the sweep on the GPU, its speed-up over scikit-learn and over
the CPU sweep of the same run (with `all`), and its objectives against scikit-learn's (or, where scikit-learn is not
installed, as on the lent GPU machines, against the CPU sweep's: `--sk-every 0` skips scikit-learn too).

    python bench/linear.py [--cases flowers,dtd,...] [--device cpu|cuda|all] [--threads N] [--sk-every K]
                           [--sk-from I] [--busy] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from augment import cpu_name
from features import case_splits

from cassle.core.threads import available_cpus
from cassle.evaluate.linear import PENALTIES, linear_probe

CASES = {  # name: (train, val, test, classes, scikit-learn's penalties: every K-th from index I): the paper's shapes
    "flowers": (1020, 1020, 6149, 102, (1, 0)),
    "dtd": (1880, 1880, 1880, 47, (1, 0)),
    "aircraft": (3334, 3333, 3333, 100, (1, 0)),
    "cub": (5994, 1000, 5794, 200, (4, 0)),
    "cifar10": (45000, 5000, 10000, 10, (11, 0)),
    "food": (68175, 7575, 25250, 101, (11, 0)),
}
Split = dict[str, np.ndarray]
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None  # not on the lent GPU machines


def objective(split: Split, weight: np.ndarray, bias: np.ndarray, classes: np.ndarray, penalty: float) -> float:
    """sum_i CE + w ||W||^2 in float64 on the original features (row j of `weight` is the label `classes[j]`)."""
    x = torch.as_tensor(split["x"], dtype=torch.float64)
    logits = x @ torch.as_tensor(weight, dtype=torch.float64).T + torch.as_tensor(bias, dtype=torch.float64)
    target = torch.as_tensor(np.searchsorted(np.asarray(classes), split["y"]))
    ce = -logits.log_softmax(1).gather(1, target[:, None]).sum()
    return float(ce) + penalty * float(np.square(weight.astype(np.float64)).sum())


def sklearn_fit(split: Split, penalty: float) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    model = LogisticRegression(C=1 / (2 * penalty), max_iter=5000).fit(split["x"], split["y"])
    return model, time.perf_counter() - start


def sklearn_protocol(train: Split, val: Split, test: Split, indices: list[int]) -> dict[str, Any]:
    """scikit-learn's sweep over PENALTIES[indices], first best on val, refit, test; per-penalty times (its threads:
    capped for the whole process by `limit_threads`)."""
    fits = {i: sklearn_fit(train, PENALTIES[i]) for i in indices}
    val_scores = {i: fits[i][0].score(val["x"], val["y"]) for i in indices}
    best = max(indices, key=lambda i: (val_scores[i], -i))
    trainval = {k: np.concatenate([train[k], val[k]]) for k in ("x", "y")}
    refit, refit_time = sklearn_fit(trainval, PENALTIES[best])
    fit_times = np.array([fits[i][1] for i in indices])
    grid = np.log(PENALTIES)
    sweep_time = float(np.interp(grid, grid[indices], fit_times).sum())  # = the measured sum when all are fitted
    return {"test": refit.score(test["x"], test["y"]), "penalty": PENALTIES[best], "best": best,
            "time": sweep_time + refit_time, "measured": len(indices) == len(PENALTIES),
            "fit_times": {PENALTIES[i]: fits[i][1] for i in indices}, "refit_time": refit_time,
            "objectives": {i: objective(train, fits[i][0].coef_, fits[i][0].intercept_, fits[i][0].classes_,
                                     PENALTIES[i])
                           for i in indices},
            "refit_objective": objective(trainval, refit.coef_, refit.intercept_, refit.classes_, PENALTIES[best])}


def torch_protocol(train: Split, val: Split, test: Split, device: str) -> tuple[dict[str, Any], float]:
    splits = [{k: torch.as_tensor(v) for k, v in s.items()} for s in (train, val, test)]
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = linear_probe(*splits, metric="top1", device=device, progress=False, return_models=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def _spin(threads: int, stop: Any) -> None:
    """A busy neighbour: float32 matmuls on `threads` threads until `stop` is set."""
    torch.set_num_threads(threads)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


@contextmanager
def busy_neighbour(enabled: bool, threads: int) -> Iterator[None]:
    """Keep the cores busy with another process while the block runs (when `enabled`)."""
    if not enabled:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_spin, args=(threads, stop), daemon=True)
    process.start()
    time.sleep(2)  # let it start its threads
    try:
        yield
    finally:
        stop.set()
        process.join(10)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def torch_reference(result: dict[str, Any], train: Split, time_s: float) -> dict[str, Any]:
    """A torch sweep as the reference of another device's (objectives at every penalty, test score, time)."""
    return {"test": result["test"], "penalty": result["penalty"], "best": PENALTIES.index(result["penalty"]),
            "time": time_s, "measured": True, "name": "cpu sweep",
            "objectives": {i: model_objective(train, m, PENALTIES[i]) for i, m in enumerate(result["models"])}}


def model_objective(split: Split, model: Any, penalty: float) -> float:
    return objective(split, model.weight.cpu().numpy(), model.bias.cpu().numpy(), model.classes.cpu().numpy(), penalty)


def run_case(name: str, devices: list[str], every: int | None, start: int | None
             ) -> list[dict[str, Any]]:
    """Every device's sweep against scikit-learn's (`every` = 0, or scikit-learn absent: against the first
    device's sweep); one row per device."""
    n_train, n_val, n_test, classes, (default_every, default_start) = CASES[name]
    train, val, test = case_splits((n_train, n_val, n_test), classes)
    trainval = {k: np.concatenate([train[k], val[k]]) for k in ("x", "y")}
    k = default_every if every is None else every
    start = default_start if start is None else start
    rows, reference, cpu_time = [], None, None
    for device in devices:
        result, torch_time = torch_protocol(train, val, test, device)
        best = PENALTIES.index(result["penalty"])
        if reference is None and k > 0 and HAS_SKLEARN:
            indices = sorted(set(range(start, len(PENALTIES), k)) | {len(PENALTIES) - 1}
                             | {i for i in (best - 1, best, best + 1) if 0 <= i < len(PENALTIES)})
            reference = {**sklearn_protocol(train, val, test, indices), "name": "scikit-learn"}
        models, final = result.pop("models"), result.pop("final")
        if reference is None:  # no scikit-learn: the first device's sweep is the reference of the others
            reference = torch_reference({**result, "models": models}, train, torch_time)
        gaps = {PENALTIES[i]: (model_objective(train, models[i], PENALTIES[i]) - f) / abs(f)
                for i, f in reference["objectives"].items()}
        refit_gap = None
        if reference["best"] == best and "refit_objective" in reference:
            f = reference["refit_objective"]
            refit_gap = (model_objective(trainval, final, PENALTIES[best]) - f) / abs(f)
        cpu_time = torch_time if device == "cpu" else cpu_time
        rows.append({
            "case": name, "train": n_train, "val": n_val, "test": n_test, "dim": train["x"].shape[1],
            "classes": classes, "device": device, "torch_s": torch_time, "reference": reference["name"],
            "reference_s": reference["time"], "reference_measured": reference["measured"],
            "reference_penalties": len(reference["objectives"]), "speedup": reference["time"] / torch_time,
            "reference_fit_times": reference.get("fit_times"), "reference_refit_s": reference.get("refit_time"),
            "speedup_vs_cpu": None if cpu_time is None or device == "cpu" else cpu_time / torch_time,
            "torch_test": result["test"], "reference_test": reference["test"],
            "accuracy_gap_pp": 100 * (result["test"] - reference["test"]), "torch_penalty": result["penalty"],
            "reference_penalty": reference["penalty"], "max_objective_gap": max(gaps.values()),
            "objective_gaps": gaps, "refit_objective_gap": refit_gap,
            "newton_iterations": sum(result["iterations"]) + result["refit_iterations"],
            "hessian_products": result["hessian_products"],
        })
        print_row(rows[-1])
    return rows


def print_row(row: dict[str, Any]) -> None:
    shape = f"{row['train']}x{row['dim']}x{row['classes']}"
    ref = f"{row['reference_s']:.1f}" + ("" if row["reference_measured"] else f"* ({row['reference_penalties']} fits)")
    print(f"{row['case']:9} {shape:14} {row['device']:5} torch {row['torch_s']:8.2f} s  {row['reference']} {ref:>18} s"
          f"  x{row['speedup']:6.2f}  test {row['torch_test']:.4f} / {row['reference_test']:.4f}  "
          f"penalty {row['torch_penalty']:.3g} / {row['reference_penalty']:.3g}  "
          f"max obj gap {row['max_objective_gap']:+.1e}", flush=True)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Run this script again with every BLAS / OpenMP library capped at `threads` from its start, unless it already
    is: within `threadpool_limits(1)` scikit-learn's fits still kept a second native thread busy here (a whole core
    during a sweep), so the 1-thread figures were not 1-thread on scikit-learn's side."""
    if all(os.environ.get(name) == str(threads) for name in THREAD_VARIABLES):
        return
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    os.execv(sys.executable, [sys.executable, *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--device", default="all", choices=("cpu", "cuda", "all"),
                        help="torch device(s); all = cpu and cuda when present (scikit-learn runs once per case)")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="threads for torch and scikit-learn's BLAS (default: the CPUs this process was given)")
    parser.add_argument("--sk-every", type=int, default=None,
                        help="fit scikit-learn on every K-th penalty only and interpolate the others' times (default: "
                        "per case; 1: all 45; 0: no scikit-learn, the first device's sweep is the reference)")
    parser.add_argument("--sk-from", type=int, default=None,
                        help="index of the weakest penalty scikit-learn fits (default: per case, 0 = w 1e-6)")
    parser.add_argument("--busy", action="store_true", help="measure with another process busy on the cores")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "linear.json",
                        help="JSON results file")
    args = parser.parse_args()
    limit_threads(args.threads)
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    load_start = os.getloadavg()[0]
    rows = []
    with busy_neighbour(args.busy, args.threads):
        for name in args.cases.split(","):
            rows.extend(run_case(name, devices, args.sk_every, args.sk_from))
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "sklearn": version("scikit-learn") if HAS_SKLEARN else None,
        "threads": args.threads, "busy": args.busy,
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_average_1min": [load_start, os.getloadavg()[0]],
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
