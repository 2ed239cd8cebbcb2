"""The rotation, few-shot and retrieval evaluations: their building blocks against hand computations, and each
`cassle eval TASK` end to end on the synthetic dataset with a random backbone. Also: parsing the options of every
task imports neither its module nor torch."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from cassle.evaluate import fewshot, retrieval, rotation, task_parser
from cassle.evaluate.fewshot import class_indices, mean_and_interval, sample_episode
from cassle.evaluate.retrieval import nearest_neighbours, pick_queries, retrieval_metrics
from cassle.evaluate.rotation import Rotations
from cassle.nets import build_backbone


@pytest.fixture(scope="module")
def random_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("source") / "random_narrow.pt"
    torch.save(build_backbone("resnet_narrow", cifar_stem=True).export_state_dict(), path)
    return path


def parse(task: str, argv: list[str]) -> argparse.Namespace:
    return task_parser(task).parse_args(argv)


def common(source: Path, out: Path, max_images: int) -> list[str]:
    return [str(source), "--arch", "resnet_narrow", "--dataset", "synthetic", "--out", str(out), "--device", "cpu",
            "--workers", "0", "--max-images", str(max_images), "--batch-size", "128", "--quiet"]


# --- options of every task -----------------------------------------------------------------------------------------

# What the planner (check_eval_options) and `cassle launch --check-only` do: build each task's parser, parse options.
PARSE_EVERY_TASK = """
import sys

from cassle.evaluate import EVAL_TASKS, task_parser

for task in EVAL_TASKS:
    args = task_parser(task).parse_args(["SOURCE", "--dataset", "synthetic", "--out", "OUT", "--seed", "1"])
    assert args.seed == 1 and callable(args.run), task
tasks = sorted(f"cassle.evaluate.{task}" for task in EVAL_TASKS if f"cassle.evaluate.{task}" in sys.modules)
heavy = sorted({module.split(".")[0] for module in sys.modules} & {"torch", "torchvision", "PIL", "numpy", "sklearn"})
assert not tasks and not heavy, f"parsing the options imported {tasks + heavy}"
"""


def test_parsing_every_tasks_options_imports_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-c", PARSE_EVERY_TASK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# --- rotation -------------------------------------------------------------------------------------------------------

class Counting(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.reads = images, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.images[index], -1


def test_rotations_are_exact_balanced_and_read_once() -> None:
    base = Counting(torch.arange(2 * 4, dtype=torch.float32).view(2, 1, 2, 2))
    rotated = Rotations(base)
    items = [rotated[i] for i in range(len(rotated))]
    assert len(items) == 8 and base.reads == 2
    assert [label for _, label in items] == [0, 1, 2, 3, 0, 1, 2, 3]
    # image 0 = [[0, 1], [2, 3]]; 90 degrees counter-clockwise -> [[1, 3], [0, 2]]
    assert items[0][0][0].tolist() == [[0, 1], [2, 3]]
    assert items[1][0][0].tolist() == [[1, 3], [0, 2]]
    assert items[2][0][0].tolist() == [[3, 2], [1, 0]]
    assert items[3][0][0].tolist() == [[2, 0], [3, 1]]
    assert items[5][0][0].tolist() == [[5, 7], [4, 6]]
    with pytest.raises(ValueError, match="square"):
        Rotations(Counting(torch.zeros(1, 1, 2, 3)))[0]


@pytest.fixture(scope="module")
def upright_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `folder` dataset of 32 px "landscapes": bright sky over dark ground, random colours and noise.

    (`synthetic` cannot serve here: its shapes, stripes and positions are rotation-invariant in distribution,
    so no model can tell its rotations apart.)"""
    root = tmp_path_factory.mktemp("upright")
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 1, 32)[:, None, None]
    for split, count in (("train", 24), ("val", 12), ("test", 24)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                sky, ground = rng.uniform(0.6, 1, 3), rng.uniform(0, 0.4, 3)
                horizon = rng.uniform(0.3, 0.7)
                image = np.where(rows < horizon, sky, ground) + 0.1 * rng.standard_normal((32, 32, 3))
                Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8)).save(root / split / label / f"{i}.png")
    return root


def test_rotation_eval_end_to_end(random_source: Path, upright_root: Path, tmp_path: Path) -> None:
    argv = common(random_source, tmp_path, 1000) + ["--penalties", "1e-2", "1", "100"]
    argv[argv.index("synthetic")] = "folder"
    args = parse("rotation", argv + ["--data-root", str(upright_root)])
    assert rotation.run(args) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["task"] == "rotation" and saved["dataset"] == "folder"
    assert saved["source"]["arch"] == "resnet_narrow" and "config_hash" in saved["provenance"]
    metrics = saved["metrics"]
    assert metrics["sizes"] == {"train": 4 * 48, "val": 4 * 24, "test": 4 * 48}
    assert metrics["top1"] > 0.6  # chance is 0.25
    train = torch.load(tmp_path / "features" / "train.pt", weights_only=True)
    assert torch.bincount(train["y"]).tolist() == [48] * 4


def test_rotation_eval_errors(random_source: Path, tmp_path: Path) -> None:
    argv = common(random_source, tmp_path, 8)
    argv[argv.index("synthetic")] = "folder"
    with pytest.raises(FileNotFoundError, match="dataset 'folder'"):
        rotation.run(parse("rotation", argv))
    argv = common(random_source, tmp_path, 8)
    argv[argv.index("resnet_narrow")] = "resnet18"
    with pytest.raises(ValueError, match="does not fit backbone 'resnet18'"):
        rotation.run(parse("rotation", argv))


# --- few-shot -------------------------------------------------------------------------------------------------------

def test_interval_matches_a_hand_computation() -> None:
    accuracies = [0.5, 0.75, 1.0, 0.25]
    mean = sum(accuracies) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / 4)
    assert mean_and_interval(np.array(accuracies)) == pytest.approx((0.625, 1.96 * std / 2))
    with pytest.raises(ValueError, match="no episode"):
        mean_and_interval(np.array([]))


def test_episodes_have_the_asked_classes_and_shots() -> None:
    labels = np.repeat(np.arange(8), [3, 30, 30, 30, 30, 30, 30, 8])  # class 0 has only 3 images
    by_class = class_indices(labels, shots=3)
    assert sorted(by_class) == [1, 2, 3, 4, 5, 6, 7]
    rng = np.random.default_rng(0)
    for _ in range(20):
        episode = sample_episode(by_class, ways=5, shots=3, queries=16, rng=rng)
        assert np.bincount(episode.support_y).tolist() == [3] * 5
        classes = labels[episode.support].reshape(5, 3)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0])) == 5
        assert (labels[episode.query] == classes[episode.query_y, 0]).all()
        assert not set(episode.support) & set(episode.query) and len(set(episode.query)) == len(episode.query)
        counts = np.bincount(episode.query_y, minlength=5)
        assert all(c == (5 if classes[i, 0] == 7 else 16) for i, c in enumerate(counts))  # class 7: 8 - 3 left
    again = sample_episode(by_class, 5, 3, 16, np.random.default_rng(1))
    same = sample_episode(by_class, 5, 3, 16, np.random.default_rng(1))
    assert np.array_equal(again.support, same.support) and np.array_equal(again.query, same.query)
    with pytest.raises(ValueError, match="need 9 classes"):
        sample_episode(by_class, 9, 3, 16, rng)


def test_fewshot_eval_end_to_end(random_source: Path, tmp_path: Path) -> None:
    argv = common(random_source, tmp_path, 64) + ["--ways", "4", "--shots", "1", "5", "--tasks", "12",
                                                  "--queries", "4"]
    assert fewshot.run(parse("fewshot", argv)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"4way_1shot", "4way_5shot"}
    for result in metrics.values():
        assert 0.25 / 4 < result["accuracy"] <= 1 and result["tasks"] == 12 and result["classes"] == 16
        assert result["ci95"] == pytest.approx(1.96 * result["std"] / math.sqrt(12))
    assert metrics["4way_5shot"]["accuracy"] > 0.4  # chance is 0.25


# --- retrieval ------------------------------------------------------------------------------------------------------

def brute_force(x: torch.Tensor, labels: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    n = len(labels)
    unit = [row / row.norm() for row in x]
    recalls = {k: [] for k in ks}
    aps = []
    for q in range(n):
        r = sum(1 for j in range(n) if j != q and labels[j] == labels[q])
        if r == 0:
            continue
        ranked = sorted((j for j in range(n) if j != q), key=lambda j: -float(unit[q] @ unit[j]))
        rel = [labels[j] == labels[q] for j in ranked]
        for k in ks:
            recalls[k].append(any(rel[:k]))
        aps.append(sum(sum(rel[:i + 1]) / (i + 1) for i in range(r) if rel[i]) / r)
    return {**{f"recall@{k}": sum(v) / len(v) for k, v in recalls.items()}, "map@r": sum(aps) / len(aps)}


def test_retrieval_metrics_match_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = [0] * 6 + [1] * 4 + [2] * 7 + [3]  # class 3 has no other image: not a query
    centers = torch.randn(4, 8, generator=generator)
    x = centers[labels] + 1.2 * torch.randn(len(labels), 8, generator=generator)
    got = retrieval_metrics(x, torch.tensor(labels), (1, 3, 5), chunk=5)
    expected = brute_force(x, labels, (1, 3, 5))
    assert got["queries"] == 17
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < got["map@r"] < 1


def test_nearest_neighbours_exclude_the_query() -> None:
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2]])
    sims, indices = nearest_neighbours(x, 2)
    assert indices.tolist() == [[1, 2], [0, 2], [3, 1], [2, 1]]
    torch.testing.assert_close(sims[0, 0], torch.nn.functional.cosine_similarity(x[0], x[1], dim=0))
    with pytest.raises(ValueError, match="k = 4"):
        nearest_neighbours(x, 4)
    assert pick_queries(50, None, 5, 0) == pick_queries(50, None, 5, 0)
    with pytest.raises(ValueError, match="out of range"):
        pick_queries(50, [3, 50], 5, 0)


def test_retrieval_eval_end_to_end(random_source: Path, tmp_path: Path) -> None:
    argv = common(random_source, tmp_path, 64) + ["--queries", "0", "5", "--k", "3"]
    assert retrieval.run(parse("retrieval", argv)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert (tmp_path / "retrieval.png").stat().st_size > 0 and (tmp_path / "retrieval.pdf").stat().st_size > 0
    assert metrics["figure_queries"] == [0, 5] and len(metrics["figure_neighbours"][0]) == 3
    features = torch.load(tmp_path / "features" / "test.pt", weights_only=True)
    expected = brute_force(features["x"], features["y"].tolist(), (1, 5, 10))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9)
