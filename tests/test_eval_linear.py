"""The linear protocol against scikit-learn: the same minimum (C = 1 / (2 w)) in every regime of the paper's
datasets, compared by objective at fixed penalties (never through ties of val scores or BLAS rounding), the
protocol's selection and refit, metrics, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from cassle.evaluate import linear, task_parser
from cassle.evaluate.linear import PENALTIES, LinearModel, SolverSettings, linear_probe
from cassle.evaluate.logistic import PART, LogisticProblem, logistic_path
from cassle.evaluate.metrics import class_avg, pearson_r2, score
from cassle.evaluate.metrics import r2_score as torch_r2_score

GRID = PENALTIES[::4]  # 12 values of the protocol's grid, 1e-6 .. 1e5


@pytest.fixture(autouse=True)
def one_thread():
    """The CI machine is shared: one thread avoids oversubscription (small matmuls, many of them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_splits(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int]) -> list[dict[str, torch.Tensor]]:
    bounds = np.cumsum((0, *sizes))
    return [{"x": torch.as_tensor(x[a:b]), "y": torch.as_tensor(y[a:b])} for a, b in zip(bounds[:-1], bounds[1:])]


def relu_features(n: int, dim: int, classes: int, seed: int = 0, sep: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like (non-negative, un-normalised, correlated) features of a make_classification problem."""
    x, y = make_classification(n_samples=n, n_features=dim, n_informative=max(2, dim // 2), n_redundant=0,
                               n_classes=classes, n_clusters_per_class=1, class_sep=sep, random_state=seed)
    mixing = np.random.default_rng(seed).normal(size=(dim, dim)) / np.sqrt(dim)
    return np.maximum(x @ mixing + 0.5, 0), y


def objective(x, y, weight, bias, penalty: float) -> float:
    """sum_i CE(W x_i + b, y_i) + w ||W||^2, written out in float64 numpy (labels 0..C-1)."""
    x, weight, bias = (np.asarray(a, dtype=np.float64) for a in (x, weight, bias))
    logits = x @ weight.T + bias
    top = logits.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    return float((log_norm - logits[np.arange(len(y)), np.asarray(y)]).sum() + penalty * np.square(weight).sum())


def sklearn_fit(x, y, penalty: float) -> LogisticRegression:
    """scikit-learn's minimiser of the same objective in float64, by its own Newton-CG converged to a gradient of
    1e-10 (its lbfgs stops earlier and takes 10-50x longer to get there), on one BLAS thread."""
    with threadpool_limits(1):
        return LogisticRegression(C=1 / (2 * penalty), solver="newton-cg", max_iter=1000, tol=1e-10).fit(
            np.asarray(x, np.float64), np.asarray(y))


def sklearn_minimum(x, y, penalty: float) -> float:
    reference = sklearn_fit(x, y, penalty)
    return objective(x, y, reference.coef_, reference.intercept_, penalty)


RTOL = 10 * SolverSettings().tolerance
"""The solver stops once its estimated gap to the minimum is below `tolerance` of the objective: a 10x margin."""


def assert_same_minimum(x, y, model, penalty: float, rtol: float = RTOL, minimum: float | None = None) -> None:
    """Our fit reaches scikit-learn's minimum (`minimum`, computed when None): our objective is not above it by
    more than `rtol` (the minimiser is unique; compared by value, no rounding of predictions involved)."""
    minimum = sklearn_minimum(x, y, penalty) if minimum is None else minimum
    ours = objective(x, y, model.weight.double().numpy(), model.bias.double().numpy(), penalty)
    assert ours <= minimum * (1 + rtol), (penalty, ours, minimum)


REGIMES = {  # n x d x classes: the shapes of the paper's datasets, small
    "n<d": (60, 120, 4),
    "n~d": (130, 120, 5),
    "n>d": (600, 24, 3),
    "many classes": (300, 40, 24),
    "n>>d, products in parts": (8 * PART + 100, 16, 3),
}


@pytest.mark.parametrize("regime", REGIMES)
def test_fits_reach_sklearns_minimum_in_every_regime(regime) -> None:
    """At a weak (nearly separable when n < d), a middle and a strong penalty: along the path in float32 and
    float64, and from zero."""
    n, dim, classes = REGIMES[regime]
    x, y = relu_features(n, dim, classes)
    penalties = [1e-3, 1.0, 1e2]
    minima = [sklearn_minimum(x, y, penalty) for penalty in penalties]
    for dtype in (torch.float32, torch.float64):
        problem = LogisticProblem(torch.as_tensor(x, dtype=dtype), torch.as_tensor(y))
        for penalty, model, minimum in zip(penalties, logistic_path(problem, penalties, SolverSettings()), minima):
            assert_same_minimum(x, y, model, penalty, minimum=minimum)
    cold = problem.model(problem.fit(penalties[0], [], SolverSettings())[0])
    assert_same_minimum(x, y, cold, penalties[0], minimum=minima[0])


def test_hessian_product_in_parts_is_the_whole_and_the_gradients_derivative() -> None:
    """Above 8 x PART samples a Hessian-vector product runs in parts of the samples: the same product as in one
    pass, and the directional derivative of the (float64) gradient (central differences)."""
    x, y = relu_features(8 * PART + 100, 16, 3)
    problem = LogisticProblem(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y))
    assert len(problem.parts) > 1
    generator = torch.Generator().manual_seed(0)
    q, b = torch.randn(3, 16, generator=generator, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    v = (torch.randn(3, 16, generator=generator, dtype=torch.float64), torch.randn(3, generator=generator,
                                                                                     dtype=torch.float64))
    point = problem.evaluate(q, b, 1.0)
    parts = problem.hessian_product(point.probs, 1.0, v)
    problem.parts = [slice(None)]
    whole = problem.hessian_product(point.probs, 1.0, v)
    plus, minus = (problem.evaluate(q + h * v[0], b + h * v[1], 1.0) for h in (1e-5, -1e-5))
    derivative = ((plus.grad_q - minus.grad_q) / 2e-5, (plus.grad_b - minus.grad_b) / 2e-5)
    for got, same, reference in zip(parts, whole, derivative):
        torch.testing.assert_close(got, same, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-8)


def test_weights_match_sklearn_at_a_fixed_penalty() -> None:
    """Strictly convex: the minimiser itself agrees (a well-conditioned penalty; weights, not only objectives)."""
    x, y = relu_features(300, 64, 12)
    model = linear_probe(*to_splits(x, y, (200, 50, 50)), metric="top1", penalties=[10.0], dtype=torch.float64,
                         settings=SolverSettings(tolerance=1e-15), progress=False, return_models=True)["models"][0]
    reference = sklearn_fit(x[:200], y[:200], 10.0)
    scale = np.abs(reference.coef_).max()  # scikit-learn stops at a gradient of ~1e-6 here; ours is ~1e-10
    np.testing.assert_allclose(model.weight.numpy(), reference.coef_, atol=1e-4 * scale)
    np.testing.assert_allclose(model.bias.numpy(), reference.intercept_, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def many_classes() -> list[dict[str, torch.Tensor]]:
    """ReLU-like features of a 12-class, 64-dim problem, 300 / 120 / 180 samples."""
    x, y = relu_features(600, 64, 12)
    return to_splits(x.astype(np.float32), y, (300, 120, 180))


@pytest.mark.parametrize("metric", ["top1", "class_avg"])
def test_protocol_selects_refits_and_scores_like_sklearn(many_classes, metric) -> None:
    """Selection = the first maximum of the val scores; the refit is scikit-learn's fit on train + val at that
    penalty (compared by objective, so no tie or rounding decides it); test = the refit's score."""
    sk_metric = {"top1": lambda y, p: float(np.mean(np.asarray(y) == p)), "class_avg": balanced_accuracy_score}
    train, val, test = many_classes
    result = linear_probe(train, val, test, metric=metric, penalties=GRID, progress=False, return_models=True)
    assert result["penalties"] == sorted(GRID) and len(result["val_scores"]) == len(GRID)
    best = result["val_scores"].index(max(result["val_scores"]))
    assert result["penalty"] == result["penalties"][best]
    for model, val_score in zip(result["models"], result["val_scores"]):
        assert val_score == pytest.approx(sk_metric[metric](val["y"], model.predict(val["x"]).numpy()), abs=1e-12)
    trainval = {k: torch.cat([train[k], val[k]]) for k in ("x", "y")}
    assert_same_minimum(trainval["x"], trainval["y"], result["final"], result["penalty"])
    assert result["test"] == pytest.approx(sk_metric[metric](test["y"], result["final"].predict(test["x"]).numpy()))
    assert result["test"] > 0.3  # far above the 1/12 chance level: the probe learnt something


@pytest.fixture(scope="module")
def synthetic_features() -> list[dict[str, torch.Tensor]]:
    """Pooled features of the `synthetic` dataset (16 joint classes) from a random narrow ResNet."""
    from cassle.data import get_dataset
    from cassle.nets import Normalize, build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet_narrow", cifar_stem=True, image_size=32).eval()
    spec, splits = get_dataset("synthetic"), []
    for split, n in (("train", 256), ("val", 128), ("test", 256)):
        data = Subset(spec.load(None, split, T.ToTensor()), range(n))
        xs, ys = [], []
        with torch.no_grad():
            for images, labels in DataLoader(data, batch_size=128):
                xs.append(backbone(Normalize()(images)))
                ys.append(labels)
        splits.append({"x": torch.cat(xs), "y": torch.cat(ys)})
    return splits


def test_synthetic_backbone_features_reach_sklearns_minimum(synthetic_features) -> None:
    """Real backbone features: every fit of a short sweep and the refit reach scikit-learn's minimum."""
    train, val, test = synthetic_features
    grid = PENALTIES[4::10]
    result = linear_probe(train, val, test, metric="top1", penalties=grid, progress=False, return_models=True)
    for penalty, model in zip(result["penalties"], result["models"]):
        assert_same_minimum(train["x"], train["y"], model, penalty)
    assert result["final"].weight.shape == (len(torch.unique(train["y"])), train["x"].shape[1])


def test_warm_and_cold_sweeps_reach_the_same_minima(many_classes) -> None:
    train = many_classes[0]
    problem = LogisticProblem(train["x"], train["y"])
    warm = logistic_path(problem, GRID, SolverSettings())
    cold = logistic_path(problem, GRID, SolverSettings(), warm_start=False)
    for penalty, a, b in zip(GRID, warm, cold):
        f_warm, f_cold = (objective(train["x"], train["y"], m.weight, m.bias, penalty) for m in (a, b))
        assert f_warm == pytest.approx(f_cold, rel=RTOL)  # each within about the tolerance of the minimum


def test_path_returns_models_in_the_order_of_the_penalties(many_classes) -> None:
    train = many_classes[0]
    problem = LogisticProblem(train["x"], train["y"])
    ascending = logistic_path(problem, [0.1, 10.0], SolverSettings())
    shuffled = logistic_path(problem, [10.0, 0.1], SolverSettings())
    torch.testing.assert_close(shuffled[0].weight, ascending[1].weight, rtol=0, atol=1e-5)
    assert ascending[0].weight.norm() > ascending[1].weight.norm()  # the weaker penalty: the larger weights


def test_degenerate_features_duplicates_constant_and_zero_columns() -> None:
    """Duplicated samples and columns, constant and all-zero columns (a rank-deficient Gram matrix, n < d)."""
    x, y = relu_features(40, 30, 3, seed=4)
    x = np.concatenate([x, x[:, :5], np.zeros((40, 6)), np.full((40, 4), 3.0)], 1)
    x, y = np.concatenate([x, x[:10]]), np.concatenate([y, y[:10]])
    problem = LogisticProblem(torch.as_tensor(x), torch.as_tensor(y))
    assert len(problem.zt) < len(x)  # the null directions were cut
    for penalty, model in zip([1e-2, 10.0], logistic_path(problem, [1e-2, 10.0], SolverSettings())):
        assert_same_minimum(x, y, model, penalty)


def test_one_class_fit_predicts_it() -> None:
    x = torch.rand(20, 5)
    result = linear_probe({"x": x, "y": torch.full((20,), 3)}, {"x": x, "y": torch.full((20,), 3)},
                          {"x": x, "y": torch.full((20,), 3)}, "top1", penalties=[1.0], progress=False)
    assert result["test"] == 1.0


def test_ties_pick_the_smallest_penalty() -> None:
    x = torch.tensor([[0.0], [1.0], [0.1], [0.9], [0.0], [1.0]])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    split = {"x": x, "y": y}
    result = linear_probe(split, split, split, "top1", penalties=[1e-3, 1e-2, 1e-1], progress=False)
    assert result["val_scores"] == [1.0, 1.0, 1.0] and result["penalty"] == 1e-3


def test_class_avg_and_top1_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 7, 300), rng.integers(0, 8, 300)  # class 7 predicted but absent from y
    y[y == 3] = 4  # class 3 absent from the targets
    t_y, t_pred = torch.as_tensor(y), torch.as_tensor(pred)
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y, pred)
    assert class_avg(t_pred, t_y) == pytest.approx(expected, abs=1e-12)
    logits = torch.nn.functional.one_hot(t_pred, 8).float()
    assert score(logits, t_y, "top1") == pytest.approx(np.mean(y == pred), abs=1e-12)


def test_r2_metrics_match_sklearn_and_the_authors_formula() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=(50, 6)) * np.arange(1, 7)
    pred = 0.7 * y + rng.normal(size=y.shape)
    assert torch_r2_score(torch.as_tensor(pred), torch.as_tensor(y)) == pytest.approx(r2_score(y, pred), abs=1e-12)
    # The authors: least-squares line target ~ m * prediction + c over the flattened pairs, then 1 - SSE / SST.
    p, t = pred.ravel(), y.ravel()
    m, c = np.polyfit(p, t, 1)
    authors = 1 - np.sum((t - (m * p + c)) ** 2) / np.sum((t - t.mean()) ** 2)
    assert pearson_r2(torch.as_tensor(pred), torch.as_tensor(y)) == pytest.approx(authors, abs=1e-12)
    y[:, 0] = 1.0  # a constant output, as sklearn: 1 when predicted exactly, else 0
    assert torch_r2_score(torch.as_tensor(pred), torch.as_tensor(y)) == pytest.approx(r2_score(y, pred), abs=1e-12)


def test_regression_protocol_matches_sklearn_ridge() -> None:
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=(360, 40)) + 0.3, 0)
    y = x @ rng.normal(size=(40, 8)) + 2 + rng.normal(size=(360, 8)) * 3
    train, val, test = to_splits(x, y, (160, 80, 120))
    result = linear_probe(train, val, test, "r2", penalties=GRID, dtype=torch.float64, progress=False)
    val_scores = [r2_score(val["y"], Ridge(alpha=w).fit(train["x"], train["y"]).predict(val["x"])) for w in GRID]
    best = int(np.argmax(val_scores))
    final = Ridge(alpha=GRID[best]).fit(np.concatenate([train["x"], val["x"]]), np.concatenate([train["y"], val["y"]]))
    np.testing.assert_allclose(result["val_scores"], val_scores, atol=1e-9)
    assert result["penalty"] == GRID[best]
    assert result["test"] == pytest.approx(r2_score(test["y"], final.predict(test["x"])), abs=1e-9)
    assert result["test_r2_authors"] == pytest.approx(pearson_r2(torch.as_tensor(final.predict(test["x"])),
                                                                 test["y"]), abs=1e-9)


def test_linear_model_maps_outputs_to_class_labels() -> None:
    model = LinearModel(torch.eye(2), torch.zeros(2), classes=torch.tensor([3, 7]))
    assert model.predict(torch.tensor([[1.0, 0.0], [0.0, 2.0]])).tolist() == [3, 7]


def parse(argv: list[str]) -> argparse.Namespace:
    return task_parser("linear").parse_args(argv)


def save_features(folder: Path, splits: list[dict[str, torch.Tensor]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in zip(("train", "val", "test"), splits):
        torch.save(split, folder / f"{name}.pt")
    return folder


def test_cli_features_end_to_end(tmp_path, many_classes) -> None:
    folder = save_features(tmp_path / "feats", many_classes)
    out = tmp_path / "out"
    assert linear.run(parse(["--features", str(folder), "--metric", "class_avg", "--out", str(out), "--quiet"])) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["task"] == "linear" and record["source"]["kind"] == "features"
    direct = linear_probe(*many_classes, metric="class_avg", progress=False)
    assert record["metrics"]["class_avg"] == pytest.approx(direct["test"])
    assert record["metrics"]["penalty"] == pytest.approx(direct["penalty"])
    assert len(record["sweep"]["val_scores"]) == 45 and "config_hash" in record["provenance"]


def test_cli_threads_and_workers_follow_the_jobs_cpus(tmp_path, many_classes, monkeypatch) -> None:
    """`cassle eval` through the real command line: a job given 1 CPU (Slurm) runs 1 torch thread, 0 workers."""
    from cassle.apps.cli import build_parser, main

    folder = save_features(tmp_path / "feats", many_classes)
    argv = ["eval", "linear", "--features", str(folder), "--metric", "top1", "--out", str(tmp_path / "o"), "--quiet"]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    torch.set_num_threads(2)
    assert main(argv) == 0 and torch.get_num_threads() == 1
    args = build_parser().parse_args(argv)
    assert (args.threads, args.workers) == (1, 0)
    assert build_parser().parse_args([*argv, "--threads", "2"]).threads == 2
    assert main([*argv, "--threads", "0"]) == 1  # one clear error, no traceback


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s[2].update(x=s[2]["x"][:, :5]), "feature dimensions differ"),
        (lambda s: s[1].update(x=s[1]["x"][:0], y=s[1]["y"][:0]), "split 'val' is empty"),
        (lambda s: s[0].update(y=s[0]["y"][:3]), "targets; they must match"),
        (lambda s: s[0].update(y=s[0]["y"].float()), "1-D integer tensor"),
    ],
)
def test_cli_bad_features_raise_one_clear_error(tmp_path, many_classes, change, message) -> None:
    splits = [dict(s) for s in many_classes]
    change(splits)
    folder = save_features(tmp_path / "feats", splits)
    with pytest.raises(ValueError, match=message):
        linear.run(parse(["--features", str(folder), "--metric", "top1", "--out", str(tmp_path / "o"), "--quiet"]))


def test_cli_usage_errors(tmp_path, many_classes) -> None:
    folder = save_features(tmp_path / "feats", many_classes)
    (folder / "val.pt").unlink()
    out = ["--out", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="val.pt is missing"):
        linear.run(parse(["--features", str(folder), "--metric", "top1", *out]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        linear.run(parse(["--features", str(tmp_path / "nowhere"), "--metric", "top1", *out]))
    with pytest.raises(ValueError, match="needs --metric"):
        linear.run(parse(["--features", str(folder), *out]))
    with pytest.raises(ValueError, match="not both"):
        linear.run(parse([str(tmp_path), "--features", str(folder), "--metric", "top1", *out]))
    with pytest.raises(ValueError, match="give SOURCE and --dataset"):
        linear.run(parse([str(tmp_path), *out]))
    with pytest.raises(ValueError, match="unknown metric"):
        linear_probe(*many_classes, metric="top5")
    with pytest.raises(ValueError, match="positive finite"):
        linear_probe(*many_classes, metric="top1", penalties=[0.0])


def test_cli_source_mode_extracts_caches_and_scores(tmp_path) -> None:
    """`cassle eval linear RUN --dataset synthetic`: features of a real (tiny) pretraining run, cached, then probed."""
    from cassle.apps.engine.trainer import pretrain
    from cassle.config import resolve

    run = tmp_path / "run"
    pretrain(resolve({"framework": "simclr", "backbone": "resnet_narrow", "dataset": "synthetic", "max_steps": 1,
                      "batch_size": 16, "projector.hidden_dim": 32, "projector.out_dim": 16, "num_workers": 0}),
             run, progress=False)
    out = tmp_path / "out"
    args = parse([str(run), "--dataset", "synthetic", "--out", str(out), "--workers", "0", "--max-images", "96",
                  "--quiet"])
    assert linear.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["top1"] <= 1.0 and metrics["dataset"] == "synthetic"
    assert all((out / "features" / f"{split}.pt").exists() for split in ("train", "val", "test"))
