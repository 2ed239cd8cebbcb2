"""The linear protocol against scikit-learn: objective (C = 1 / (2 w)), sweep + selection + refit, metrics, CLI."""

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
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from cassle.evaluate import linear
from cassle.evaluate.linear import PENALTIES, LinearModel, SolverSettings, linear_probe
from cassle.evaluate.metrics import class_avg, pearson_r2, score
from cassle.evaluate.metrics import r2_score as torch_r2_score

GRID = PENALTIES[::4]  # 12 values of the protocol's grid, 1e-6 .. 1e5: keeps the sklearn reference fast


@pytest.fixture(autouse=True)
def one_thread():
    """The CI machine is shared: one thread avoids oversubscription (tiny matmuls, thousands of iterations)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_splits(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int]) -> list[dict[str, torch.Tensor]]:
    bounds = np.cumsum((0, *sizes))
    return [{"x": torch.as_tensor(x[a:b]), "y": torch.as_tensor(y[a:b])} for a, b in zip(bounds[:-1], bounds[1:])]


class SklearnSweep:
    """The protocol with sklearn LogisticRegression: fit C = 1/(2w) on train, first best on val, refit, test.
    Fits are cached, so that several metrics share one sweep."""

    def __init__(self, train, val, test, grid) -> None:
        self.train, self.val, self.test, self.grid = train, val, test, grid
        self.trainval = {k: torch.cat([train[k], val[k]]) for k in ("x", "y")}
        self.val_predictions = [self.fit(train, w).predict(val["x"].double()) for w in grid]
        self.refits: dict[int, np.ndarray] = {}

    @staticmethod
    def fit(split, w):
        return LogisticRegression(C=1 / (2 * w), max_iter=5000, tol=1e-6).fit(split["x"].double(), split["y"])

    def __call__(self, metric_fn) -> tuple[float, float]:
        best = int(np.argmax([metric_fn(self.val["y"], p) for p in self.val_predictions]))
        if best not in self.refits:
            self.refits[best] = self.fit(self.trainval, self.grid[best]).predict(self.test["x"].double())
        return metric_fn(self.test["y"], self.refits[best]), self.grid[best]


@pytest.fixture(scope="module")
def many_classes() -> list[dict[str, torch.Tensor]]:
    """ReLU-like (non-negative, un-normalised) features of a 12-class, 64-dim problem."""
    x, y = make_classification(n_samples=600, n_features=64, n_informative=32, n_redundant=0, n_classes=12,
                               n_clusters_per_class=1, class_sep=1.5, random_state=0)
    x = np.maximum(x @ np.random.default_rng(0).normal(size=(64, 64)) / 8 + 0.5, 0).astype(np.float32)
    return to_splits(x, y, (300, 120, 180))


def test_objective_matches_sklearn_c_mapping(many_classes) -> None:
    train = many_classes[0]
    problem = linear._LogisticProblem(train["x"].double(), train["y"])
    settings = SolverSettings(tolerance_grad=1e-10, tolerance_change=1e-14)
    for w in (1e-1, 10.0):
        ours = problem.fit(w, None, settings)
        ref = LogisticRegression(C=1 / (2 * w), max_iter=5000, tol=1e-10).fit(train["x"].double(), train["y"])
        np.testing.assert_allclose(ours.weight.numpy(), ref.coef_, atol=2e-4 * np.abs(ref.coef_).max())
        np.testing.assert_allclose(ours.bias.numpy(), ref.intercept_, atol=2e-4 * np.abs(ref.intercept_).max() + 1e-4)


@pytest.fixture(scope="module")
def many_classes_sklearn(many_classes) -> SklearnSweep:
    return SklearnSweep(*many_classes, GRID)


@pytest.mark.parametrize("metric", ["top1", "class_avg"])
def test_protocol_matches_sklearn(many_classes, many_classes_sklearn, metric) -> None:
    sk_metric = {"top1": lambda y, p: float(np.mean(np.asarray(y) == p)), "class_avg": balanced_accuracy_score}
    result = linear_probe(*many_classes, metric=metric, penalties=GRID, progress=False)
    reference, _ = many_classes_sklearn(sk_metric[metric])
    assert result["penalties"] == sorted(GRID) and len(result["val_scores"]) == len(GRID)
    assert abs(result["test"] - reference) <= 0.005
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


def test_synthetic_backbone_features_match_sklearn(synthetic_features) -> None:
    result = linear_probe(*synthetic_features, metric="top1", penalties=GRID, dtype=torch.float64, progress=False)
    reference, _ = SklearnSweep(*synthetic_features, GRID)(lambda y, p: float(np.mean(np.asarray(y) == p)))
    assert abs(result["test"] - reference) <= 0.005


def test_warm_and_cold_sweeps_agree(many_classes) -> None:
    warm = linear_probe(*many_classes, metric="top1", penalties=GRID[5:], progress=False)
    cold = linear_probe(*many_classes, metric="top1", penalties=GRID[5:], warm_start=False, progress=False)
    assert warm["penalty"] == cold["penalty"]
    assert abs(warm["test"] - cold["test"]) <= 0.005


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
    parser = argparse.ArgumentParser()
    linear.add_arguments(parser)
    return parser.parse_args(argv)


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
    parser = argparse.ArgumentParser()
    linear.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args([str(run), "--dataset", "synthetic", "--out", str(out), "--workers", "0",
                              "--max-images", "96", "--quiet"])
    assert linear.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["top1"] <= 1.0 and metrics["dataset"] == "synthetic"
    assert all((out / "features" / f"{split}.pt").exists() for split in ("train", "val", "test"))
