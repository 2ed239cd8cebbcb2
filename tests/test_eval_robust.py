"""Corruptions (ImageNet-C weather), the sensitivity eval (InfoNCE per stage) and the conditioning eval (Fig 3)."""

from __future__ import annotations

import argparse
import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cassle.apps.engine.trainer import pretrain
from cassle.augment import OMEGA_SLICES
from cassle.config import resolve
from cassle.core.io import read_json
from cassle.data import SyntheticShapes
from cassle.evaluate import conditioning, corruption, sensitivity, task_parser
from cassle.evaluate.corruptions import CORRUPTIONS, corrupt, motion_blur, plasma_fractal
from cassle.evaluate.load import load_method

TINY = {"framework": "mocov2", "backbone": "resnet_narrow", "dataset": "synthetic", "max_steps": 2,
        "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32, "queue_size": 64,
        "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16, "num_workers": 0}


@pytest.fixture(scope="module")
def cassle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cassle_run")
    pretrain(resolve({**TINY, "variant": "cassle"}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vanilla_run")
    pretrain(resolve({**TINY, "variant": "vanilla"}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def images() -> Tensor:
    return SyntheticShapes("test", size=32).render(list(range(6))).float() / 255


def _args(task: str, argv: list[str]) -> argparse.Namespace:
    return task_parser(task).parse_args(argv)


# --- corruptions ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_keep_shape_and_range_and_are_deterministic(images: Tensor, name: str) -> None:
    for severity in (1, 5):
        out = corrupt(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images)
        assert torch.equal(out, corrupt(images, name, severity, seed=3))
        # per-image randomness: a sub-batch with the same dataset indices gives the same images
        torch.testing.assert_close(corrupt(images[2:4], name, severity, seed=3, indices=[2, 3]), out[2:4])
    if name != "brightness":
        assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("name", ["brightness", "fog", "snow"])
def test_corruption_change_grows_with_severity(images: Tensor, name: str) -> None:
    change = [(corrupt(images, name, s) - images).abs().mean().item() for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]


def test_frost_hides_the_image_more_with_severity(images: Tensor) -> None:
    # ImageNet-C's frost trades image weight for frost weight, so the image's share (correlation) falls
    def correlation(a: Tensor, b: Tensor) -> float:
        return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])

    corr = [correlation(corrupt(images, "frost", s), images) for s in (1, 3, 5)]
    assert corr[0] > corr[1] > corr[2]


def test_brightness_matches_an_hsv_value_shift(images: Tensor) -> None:
    x = torch.cat([images[:1, :, :4, :4], torch.zeros(1, 3, 4, 4)])  # includes black pixels
    out = corrupt(x, "brightness", 2)
    for n, i, j in [(0, 0, 0), (0, 1, 3), (0, 3, 2), (1, 0, 0)]:
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        expected = colorsys.hsv_to_rgb(h, s, min(1.0, v + 0.2))
        torch.testing.assert_close(out[n, :, i, j], torch.tensor(expected), atol=1e-6, rtol=0)


def test_plasma_fractal_is_a_normalised_power_of_two_map() -> None:
    rng = np.random.default_rng(0)
    grid = plasma_fractal(64, 2.0, rng)
    assert grid.shape == (64, 64) and grid.min() == 0 and grid.max() == 1
    assert np.abs(np.diff(grid, axis=0)).mean() < 0.2  # smooth, not white noise
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(60, 2.0, rng)


def test_motion_blur_matches_a_one_sided_weighted_sum() -> None:
    layer = torch.rand(2, 1, 5, 9, dtype=torch.float64)
    radius, sigma = 3, 2.0
    weights = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma**2))
    weights /= weights.sum()
    out = motion_blur(layer, radius, sigma, torch.tensor([0.0, 90.0]))
    a = layer.numpy()[:, 0]
    right = sum(w * a[0][:, np.minimum(np.arange(9) + i, 8)] for i, w in enumerate(weights))  # angle 0: +x
    down = sum(w * a[1][np.minimum(np.arange(5) + i, 4), :] for i, w in enumerate(weights))  # angle 90: +y
    np.testing.assert_allclose(out[0, 0].numpy(), right, atol=1e-10)
    np.testing.assert_allclose(out[1, 0].numpy(), down, atol=1e-10)


def test_corrupt_rejects_bad_input(images: Tensor) -> None:
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corrupt(images, "rain", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(images, "fog", 6)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        corrupt(images[0], "fog", 1)


def test_corruption_eval_writes_scores_per_corruption_and_severity(cassle_run: Path, tmp_path: Path) -> None:
    args = _args("corruption", [str(cassle_run), "--dataset", "synthetic", "--out", str(tmp_path), "--max-images",
                                "32", "--corruptions", "brightness", "fog", "--severities", "1", "5", "--workers", "0",
                              "--penalties", "1", "--quiet", "--device", "cpu"])
    assert corruption.run(args) == 0
    record = read_json(tmp_path / "metrics.json")
    metrics = record["metrics"]
    assert record["task"] == "corruption"
    expected = {"clean", "brightness/1", "brightness/5", "fog/1", "fog/5", "brightness", "fog", "severity/1",
                "severity/5", "mean"}
    assert set(metrics) == expected and all(0 <= v <= 1 for v in metrics.values())
    assert metrics["fog"] == pytest.approx((metrics["fog/1"] + metrics["fog/5"]) / 2)
    assert (tmp_path / "features" / "test-fog-5.pt").is_file()


class Pixels(nn.Module):
    """A 'backbone' that has seen no image, let alone a corruption: the image average-pooled to 8 x 8."""

    stage_names = ("pooled",)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)


def test_corruption_accuracy_falls_with_severity_for_a_model_that_never_saw_it(tmp_path: Path) -> None:
    """The clean-trained classifier of raw pooled pixels loses accuracy as fog thickens: clean > severity 1 >
    severity 5, each by several points (measured: 27%, ~21%, ~15% on these 512 images, 16 classes)."""
    info = {"sha256": "pixels", "arch": "pixels", "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 32}
    args = argparse.Namespace(data_root=None, batch_size=256, device="cpu", workers=0, max_images=512, quiet=True,
                              penalties=[1.0], out=tmp_path, dataset="synthetic", seed=0)
    clean, scores = corruption.corruption_scores(args, Pixels(), info, "top1", ["fog"], [1, 5])
    assert clean["test"] > scores["fog", 1] + 0.02 > scores["fog", 5] + 0.04
    metrics = corruption.summarize(clean["test"], scores)
    assert metrics["fog"] == pytest.approx((scores["fog", 1] + scores["fog", 5]) / 2)


# --- sensitivity ----------------------------------------------------------------------------------------------------

class Constructed(nn.Module):
    """Stages invariant to one augmentation by construction: `luma` (the grey value of every pixel) to grayscale,
    `mirror_sum` (x + its mirror image) to the horizontal flip; `pooled` (the raw pixels) to neither."""

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        luma = (x * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
        return {"luma": luma, "mirror_sum": x + x.flip(-1), "pooled": x.flatten(1)}


def unflip(e: Tensor, omega: Tensor) -> Tensor:
    """A 'projector' that undoes the flip its omega records: invariant to the flip given the true omega."""
    images = e.view(len(e), 3, 16, 16)
    flipped = omega[:, OMEGA_SLICES["flip"]].squeeze(1) > 0.5
    return torch.where(flipped[:, None, None, None], images.flip(-1), images).flatten(1)


def test_sensitivity_ranks_augmentations_as_the_construction_says() -> None:
    """A stage invariant to an augmentation scores the identity's InfoNCE (the floor: same features), a stage that
    sees it scores clearly more; the projector gets the augmented view's true omega, so it undoes the flip."""
    data = [(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), 0) for i in range(32)]
    samplers = {name: sensitivity.single_augmentation_sampler(name, 16) for name in ("identity", "flip", "grayscale")}
    result = sensitivity.stage_sensitivity(Constructed(), nn.Identity(), sensitivity.batch_loader(data, 16, seed=0),
                                           samplers, project=unflip)
    floor = result["identity"]
    invariant = {"flip": ("mirror_sum", "projector"), "grayscale": ("luma",)}
    for augmentation, stages in invariant.items():
        for stage, value in result[augmentation].items():
            if stage in stages:
                assert value == pytest.approx(floor[stage], abs=1e-4), (augmentation, stage)
            else:
                assert value > floor[stage] + 0.05, (augmentation, stage)


def test_infonce_matches_a_hand_computation() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    t = 0.5
    unit = lambda v: [x / math.hypot(*v) for x in v]  # noqa: E731
    rows, cols = [unit(r) for r in a.tolist()], [unit(r) for r in b.tolist()]
    expected = 0.0
    for i, r in enumerate(rows):
        logits = [sum(p * q for p, q in zip(r, c)) / t for c in cols]
        expected += -(logits[i] - math.log(sum(math.exp(v) for v in logits))) / 3
    assert sensitivity.infonce(a, b, t).item() == pytest.approx(expected * 2 * t, rel=1e-6)
    # feature maps are flattened
    maps = torch.randn(4, 2, 3, 3)
    assert sensitivity.infonce(maps, maps).item() == pytest.approx(
        sensitivity.infonce(maps.flatten(1), maps.flatten(1)).item())


def test_identity_augmentation_gives_the_lowest_infonce(cassle_run: Path) -> None:
    method = load_method(cassle_run, "cpu")
    data = SyntheticShapes("test", size=32, lengths={"test": 32})
    samplers = {name: sensitivity.single_augmentation_sampler(name, 32) for name in ("identity", "crop", "color")}
    views, omega = samplers["identity"](data.render(range(4)).float() / 255)
    torch.testing.assert_close(views, data.render(range(4)).float() / 255, atol=1e-5, rtol=0)
    torch.testing.assert_close(omega, sensitivity.identity_omega(4))
    loader = sensitivity.batch_loader([(x.float() / 255, y) for x, y in data], 16, seed=0)
    result = sensitivity.stage_sensitivity(method.backbone, method.normalize, loader, samplers,
                                           project=method.project)
    assert set(result["crop"]) == {*method.backbone.stage_names, "projector"}
    for stage, value in result["identity"].items():
        assert value <= result["crop"][stage] + 1e-6 and value <= result["color"][stage] + 1e-6


def test_sensitivity_eval_writes_metrics_and_figure_and_compares(cassle_run: Path, vanilla_run: Path,
                                                                 tmp_path: Path) -> None:
    common = ["--dataset", "synthetic", "--max-images", "40", "--batch-size", "16", "--workers", "0", "--quiet",
              "--augmentations", "flip", "blur"]
    first = tmp_path / "vanilla"
    assert sensitivity.run(_args("sensitivity", [str(vanilla_run), "--out", str(first), *common])) == 0
    second = tmp_path / "cassle"
    assert sensitivity.run(_args("sensitivity", [str(cassle_run), "--out", str(second), "--compare", str(first),
                                                 *common])) == 0
    record = read_json(second / "metrics.json")
    assert record["options"]["label"] == "mocov2 cassle"
    assert set(record["metrics"]) == {f"infonce/{aug}/{stage}" for aug in ("flip", "blur")
                                      for stage in ("stem", "layer1", "layer2", "layer3", "layer4", "pooled",
                                                    "projector")}
    assert all(v >= 0 for v in record["metrics"].values())
    assert (second / "sensitivity.png").stat().st_size > 0 and (second / "sensitivity.pdf").is_file()
    with pytest.raises(FileNotFoundError, match="--compare"):
        sensitivity.run(_args("sensitivity", [str(cassle_run), "--out", str(tmp_path / "x"), "--compare",
                                              str(tmp_path / "missing"), *common]))


# --- conditioning ---------------------------------------------------------------------------------------------------

class OmegaShift(nn.Module):
    """A constructed conditioned model: features = per-image pixel means, projection = features + omega's blur
    column, so a view's projection depends on which omega it is given in a known way."""

    def embed(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))

    def project(self, e: Tensor, omega: Tensor) -> Tensor:
        return e + omega[:, :1]


def test_true_vs_random_fraction_is_computed_per_pair() -> None:
    data = [(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), 0) for i in range(10)]
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    sampler = sensitivity.single_augmentation_sampler("blur", 16)
    model = OmegaShift()
    true, random = conditioning.pair_similarities(model, loader, sampler, seed=1)
    # recompute independently: same generator draws, omega3 = the batch's omega2 rolled by one
    generator = torch.Generator().manual_seed(1)
    expected_true, expected_random = [], []
    for x, _ in loader:
        (v1, w1), (v2, w2) = sampler(x, generator), sampler(x, generator)
        z1, e2 = model.project(model.embed(v1), w1), model.embed(v2)
        for i in range(len(x)):
            cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
            expected_true.append(cos(z1[i], e2[i] + w2[i, 0]))
            expected_random.append(cos(z1[i], e2[i] + w2[(i - 1) % len(x), 0]))
    torch.testing.assert_close(true, torch.tensor(expected_true), atol=1e-5, rtol=0)
    torch.testing.assert_close(random, torch.tensor(expected_random), atol=1e-5, rtol=0)
    summary = conditioning.summarize(true, random)
    beats = sum(t > r for t, r in zip(expected_true, expected_random)) / 10
    assert summary["fraction_true_beats_random"] == pytest.approx(beats)
    assert summary["num_pairs"] == 10
    assert conditioning.summarize(torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.2, 0.3, 0.4]))[
        "fraction_true_beats_random"] == pytest.approx(2 / 3)


class ColourInvariant(nn.Module):
    """Conditioned on omega by construction: features = a view's channel means (centred on grey); projection =
    features + omega's colour difference (mean before jitter - mean after), i.e. the centred channel means of the
    image before the jitter. With the true omega both views of an image project to the same point; with another
    image's omega they do not."""

    def embed(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)) - 0.5

    def project(self, e: Tensor, omega: Tensor) -> Tensor:
        return e + omega[:, OMEGA_SLICES["color_diff"]]


class OmegaBlind(ColourInvariant):
    def project(self, e: Tensor, omega: Tensor) -> Tensor:
        return e


def test_true_omega_beats_random_exactly_when_the_model_uses_it() -> None:
    generators = [torch.Generator().manual_seed(i) for i in range(40)]  # images of one random colour, plus noise
    data = [(0.8 * torch.rand(3, 1, 1, generator=g) + 0.2 * torch.rand(3, 16, 16, generator=g), 0)
            for g in generators]
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    sampler = sensitivity.single_augmentation_sampler("color", 16)
    conditioned = conditioning.summarize(*conditioning.pair_similarities(ColourInvariant(), loader, sampler))
    assert conditioned["mean_true"] == pytest.approx(1.0, abs=1e-5) and conditioned["mean_random"] < 0.9
    assert conditioned["fraction_true_beats_random"] == 1.0 and conditioned["num_pairs"] == 40
    blind = conditioning.summarize(*conditioning.pair_similarities(OmegaBlind(), loader, sampler))
    assert blind["fraction_true_beats_random"] == 0.0 and blind["mean_difference"] == 0.0


def test_conditioning_eval_on_a_cassle_run(cassle_run: Path, tmp_path: Path) -> None:
    args = _args("conditioning", [str(cassle_run), "--dataset", "synthetic", "--out", str(tmp_path), "--max-images",
                                  "40", "--batch-size", "16", "--num-pairs", "33", "--workers", "0", "--quiet"])
    assert conditioning.run(args) == 0
    metrics = read_json(tmp_path / "metrics.json")["metrics"]
    assert metrics["num_pairs"] == 33
    assert 0 <= metrics["fraction_true_beats_random"] <= 1
    assert -1 <= metrics["mean_random"] <= 1 and -1 <= metrics["mean_true"] <= 1
    assert metrics["mean_difference"] == pytest.approx(metrics["mean_true"] - metrics["mean_random"], abs=1e-6)
    assert (tmp_path / "conditioning.png").is_file() and (tmp_path / "conditioning.pdf").is_file()
    histogram = read_json(tmp_path / "histogram.json")  # what the report draws Fig 3 from
    assert len(histogram["edges"]) == len(histogram["true"]) + 1 == conditioning.HISTOGRAM_BINS + 1
    assert sum(histogram["true"]) == sum(histogram["random"]) == 33


def test_similarity_histogram_counts_by_hand() -> None:
    counts = conditioning.similarity_histogram(torch.tensor([-1.0, 0.05, 0.95, 1.0]), torch.tensor([0.0, 0.0]), 4)
    assert counts["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert counts["true"] == [1, 0, 1, 2] and counts["random"] == [0, 0, 2, 0]  # [-1,-.5) [-.5,0) [0,.5) [.5,1]


def test_conditioning_eval_refuses_a_vanilla_run(vanilla_run: Path, tmp_path: Path) -> None:
    args = _args("conditioning", [str(vanilla_run), "--dataset", "synthetic", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(ValueError, match="run of variant vanilla.*needs a CASSLE run"):
        conditioning.run(args)
    assert not (tmp_path / "metrics.json").exists()
