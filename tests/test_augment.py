"""ViewSampler and omega: views rebuilt from omega with torchvision, colour/blur ops against torchvision,
application rates and parameter ranges, determinism, and the omega helpers."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import subprocess
import sys
import threading

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cassle.augment import (
    OMEGA_DIM,
    OMEGA_KEYS,
    OMEGA_SLICES,
    RELATIVE_BINARY_KEYS,
    ViewParams,
    ViewSampler,
    image_sizes,
    omega_dim,
    relative_omega,
    select_omega,
)
from cassle.augment.functional import JITTER_OPS

TV_JITTER = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
             "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}
GEOMETRY_ONLY = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0}
FULL_CROP = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_p": 0.0, "antialias": False}


@pytest.fixture(params=["fused", "eager"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each CPU renderer: the numba kernel (the default) and the eager ops of other devices."""
    import cassle.augment.render as render

    monkeypatch.setattr(render, "FUSED_CPU", request.param == "fused")
    return request.param


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_float(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32) / 255.0 if image.dtype == torch.uint8 else image


def pink_noise(size: int, seed: int) -> torch.Tensor:
    """A 3 x size x size image in [0, 1] with a natural-image-like 1/f amplitude spectrum."""
    g = gen(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    amplitude = 1.0 / (fx**2 + fy**2).sqrt().clamp_min(1.0 / size)
    spectrum = torch.complex(torch.randn(3, size, size // 2 + 1, generator=g),
                             torch.randn(3, size, size // 2 + 1, generator=g)) * amplitude
    x = torch.fft.irfft2(spectrum, s=(size, size))
    x = x - x.amin(dim=(1, 2), keepdim=True)
    return x / x.amax(dim=(1, 2), keepdim=True)


def rebuild_from_omega(image: torch.Tensor, omega: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """The view that omega's crop and flip columns describe, made by torchvision from the source."""
    src_h, src_w = image.shape[1:]
    cy, cx, fh, fw = omega[OMEGA_SLICES["crop"]].double().tolist()
    flipped = omega[OMEGA_SLICES["flip"]].item() == 1.0
    if flipped:
        cx = 1.0 - cx
    h, w = round(fh * src_h), round(fw * src_w)
    top, left = round(cy * src_h - h / 2), round(cx * src_w - w / 2)
    view = TF.resized_crop(as_float(image), top, left, h, w, [size, size], antialias=antialias)
    return TF.hflip(view) if flipped else view


SOURCES = {
    "uint8 batch, non-square": lambda: torch.randint(0, 256, (24, 3, 40, 56), dtype=torch.uint8, generator=gen(1)),
    "float batch": lambda: torch.rand(24, 3, 48, 48, generator=gen(2)),
    "uint8 list of sizes": lambda: [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen(h * w))
                                    for h, w in [(20, 70), (100, 30), (32, 32), (16, 17), (61, 45), (200, 150)] * 3],
}


@pytest.mark.parametrize("source", SOURCES)
def test_crop_and_flip_rebuilt_from_omega_match_torchvision(source: str, renderer: str) -> None:
    images = SOURCES[source]()
    views, omega = ViewSampler(32, antialias=False, **GEOMETRY_ONLY)(images, generator=gen(0))
    assert views.shape == (len(images), 3, 32, 32) and views.dtype == torch.float32
    assert omega.shape == (len(images), OMEGA_DIM)
    assert 0 < omega[:, OMEGA_SLICES["flip"]].sum() < len(images)  # both branches exercised
    for key in ("blur", "color", "color_diff", "grayscale"):
        assert torch.equal(omega[:, OMEGA_SLICES[key]], torch.zeros_like(omega[:, OMEGA_SLICES[key]]))
    for image, view, w in zip(images, views, omega):
        # grid_sample's float32 normalised coordinates round to ~6e-8 * extent pixels: 1.2e-5 at 200 px
        atol = max(1e-5, 1e-7 * max(image.shape[1:]))
        torch.testing.assert_close(view, rebuild_from_omega(image, w, 32, antialias=False), rtol=0, atol=atol)


@pytest.mark.parametrize("as_list", [False, True])
@pytest.mark.parametrize("crop_scale", [(0.02, 0.1), (0.25, 1.0)])  # downscale ~1-2x and ~3-6x
def test_antialiased_downscale_equals_torchvision_antialias(crop_scale: tuple[float, float], as_list: bool, renderer: str) -> None:
    """The antialiased resize is torchvision's (triangle filter of half-width = the downscale), up to float32
    rounding, for batch tensors and lists; plain bilinear sampling, which aliases, is far from it."""
    images = torch.stack([pink_noise(192, seed) for seed in range(8)])
    kwargs = {"crop_scale": crop_scale, **GEOMETRY_ONLY}
    source = list(images) if as_list else images
    views, omega = ViewSampler(32, **kwargs)(source, generator=gen(3))
    aliased, _ = ViewSampler(32, antialias=False, **kwargs)(source, generator=gen(3))
    reference = torch.stack([rebuild_from_omega(im, w, 32, antialias=True) for im, w in zip(images, omega)])
    torch.testing.assert_close(views, reference, rtol=0, atol=2e-5)
    assert (aliased - reference).abs().mean() > 1e-3


def test_list_input_renders_like_the_batch_tensor(renderer: str) -> None:
    """Lists are read in place (fused) or packed as crop regions per resize kind (eager); the views must not
    depend on that."""
    images = torch.stack([pink_noise(96, seed) for seed in range(12)])
    sampler = ViewSampler(32, crop_scale=(0.05, 1.0))  # downscales ~0.7 to 3: bilinear and antialiased
    params = sampler.sample(image_sizes(images), gen(19))
    assert len(torch.unique(torch.ceil(params.crop[:, 2:].amax(1) / 32))) >= 3
    views, omega = sampler.apply(images, params)
    views_list, omega_list = sampler.apply(list(images), params)
    torch.testing.assert_close(views_list, views, rtol=0, atol=2e-5)
    torch.testing.assert_close(omega_list, omega, rtol=0, atol=1e-5)  # color_diff sees the ~1e-6 differences


def jitter_reference(image: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's own colour ops, one sample, in the given order."""
    for op in order.tolist():
        image = TV_JITTER[JITTER_OPS[op]](image, factors[op].item())
    return image


def test_jitter_follows_recorded_factors_and_per_sample_order(renderer: str) -> None:
    images = torch.rand(64, 3, 24, 24, generator=gen(4))
    images[0] = 0.5  # gray pixels: hue undefined
    images[1, :, :, :8] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)  # ties between max channels
    sampler = ViewSampler(24, jitter_p=0.75, jitter=(0.6, 0.5, 0.7, 0.5), gray_p=0.0, blur_p=0.0, **FULL_CROP)
    params = sampler.sample(image_sizes(images), gen(5))
    views, omega = sampler.apply(images, params)
    assert len({tuple(o) for o in params.order[params.jitter].tolist()}) > 10  # orders differ per sample
    expected = torch.stack([jitter_reference(im, f, o) if j else im
                            for im, f, o, j in zip(images, params.factors, params.order, params.jitter)])
    torch.testing.assert_close(views, expected, rtol=0, atol=2e-5)
    color_diff = images.mean(dim=(2, 3)) - expected.mean(dim=(2, 3))
    torch.testing.assert_close(omega[:, OMEGA_SLICES["color_diff"]], color_diff, rtol=0, atol=1e-6)
    widths = torch.tensor([1.2, 1.0, 1.4, 1.0])  # (1 + j) - max(0, 1 - j), and 2 * hue
    expected_color = (params.factors - torch.tensor([1.0, 1.0, 1.0, 0.0])) / widths
    torch.testing.assert_close(omega[:, OMEGA_SLICES["color"]], expected_color * params.jitter[:, None])


def test_grayscale_gives_equal_channels_of_torchvision_luma(renderer: str) -> None:
    images = torch.rand(16, 3, 20, 20, generator=gen(6))
    views, omega = ViewSampler(20, jitter_p=0.0, gray_p=1.0, blur_p=0.0, **FULL_CROP)(images, generator=gen(7))
    assert torch.equal(omega[:, OMEGA_SLICES["grayscale"]], torch.ones(16, 1))
    assert torch.equal(views[:, 0], views[:, 1]) and torch.equal(views[:, 1], views[:, 2])
    torch.testing.assert_close(views, TF.rgb_to_grayscale(images, num_output_channels=3), rtol=0, atol=1e-5)


def test_blur_matches_torchvision_gaussian_blur_with_recorded_sigma(renderer: str) -> None:
    images = torch.rand(12, 3, 32, 32, generator=gen(8))
    sampler = ViewSampler(32, jitter_p=0.0, gray_p=0.0, blur_p=1.0, blur_kernel=9, **FULL_CROP)
    views, omega = sampler(images, generator=gen(9))
    sigmas = omega[:, OMEGA_SLICES["blur"]].squeeze(1)
    assert ((sigmas >= 0.1) & (sigmas <= 2.0)).all()
    expected = torch.stack([TF.gaussian_blur(im, [9, 9], [s.item(), s.item()]) for im, s in zip(images, sigmas)])
    torch.testing.assert_close(views, expected, rtol=0, atol=1e-5)


def test_default_blur_kernel_scales_with_view_size() -> None:
    assert [ViewSampler(s).blur_kernel for s in (224, 96, 64, 32, 8)] == [23, 9, 7, 3, 1]


def five_sigma(rate: float, p: float, n: int) -> bool:
    return abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


SETTINGS = {
    "defaults": ({}, (32, 32)),
    "non-default": ({"crop_scale": (0.5, 0.9), "crop_ratio": (0.5, 2.0), "flip_p": 0.3, "jitter_p": 0.4,
                     "jitter": (0.8, 0.2, 0.0, 0.3), "gray_p": 0.6, "blur_p": 0.1, "blur_sigma": (0.5, 1.0)},
                    (24, 40)),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_rates_and_parameter_ranges_over_10000_samples(setting: str) -> None:
    kwargs, (src_h, src_w) = SETTINGS[setting]
    sampler = ViewSampler(32, **kwargs)
    n = 10_000
    images = torch.randint(0, 256, (n, 3, src_h, src_w), dtype=torch.uint8, generator=gen(10))
    params = sampler.sample(image_sizes(images), gen(11))
    views, omega = sampler.apply(images, params)
    assert views.min() >= 0 and views.max() <= 1
    col = {key: omega[:, sl] for key, sl in OMEGA_SLICES.items()}

    flip, gray, blurred = col["flip"].squeeze(1) == 1, col["grayscale"].squeeze(1) == 1, col["blur"].squeeze(1) > 0
    jittered = (col["color"] != 0).any(dim=1)
    for observed, p in ((flip, sampler.flip_p), (params.jitter, sampler.jitter_p), (gray, sampler.gray_p),
                        (blurred, sampler.blur_p)):
        assert five_sigma(observed.double().mean().item(), p, n)
    assert torch.equal(jittered, params.jitter) and torch.equal(flip, params.flip)
    assert torch.equal(gray, params.grayscale) and torch.equal(blurred, params.blur)

    # colour: in [-0.5, 0.5], exactly 0 (with color_diff) where not jittered; zero-width ranges give 0
    assert col["color"].abs().max() <= 0.5
    assert not col["color"][~params.jitter].any() and not col["color_diff"][~params.jitter].any()
    for i, strength in enumerate(sampler.jitter):
        spread = col["color"][params.jitter, i]
        assert (spread.abs().max() > 0.45) if strength > 0 else not spread.any()
    lo, hi = sampler.blur_sigma
    sigma = col["blur"][blurred]
    assert sigma.min() >= lo and sigma.max() <= hi and (sigma.max() - sigma.min()) > 0.9 * (hi - lo)

    # crops (source pixels): w = round(sqrt(A s r)), h = round(sqrt(A s / r)) => s and r within rounding of range,
    # unless all 10 attempts failed and torchvision's fallback (here: the whole image) was taken
    top, left, h, w = params.crop.double().unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= src_h).all() and (left + w <= src_w).all()
    area = src_h * src_w
    (s_lo, s_hi), (r_lo, r_hi) = sampler.crop_scale, sampler.crop_ratio
    in_range = ((h - 0.5) * (w - 0.5) / area <= s_hi) & ((h + 0.5) * (w + 0.5) / area >= s_lo)
    in_range &= ((w - 0.5) / (h + 0.5) <= r_hi) & ((w + 0.5) / (h - 0.5) >= r_lo)
    assert r_lo <= src_w / src_h <= r_hi  # so the fallback is the whole image
    fallback = (top == 0) & (left == 0) & (h == src_h) & (w == src_w)
    assert (in_range | fallback).all() and fallback.double().mean() < 0.05
    fraction = (h * w / area)[in_range]
    assert fraction.min() < s_lo + 0.05 and fraction.max() > s_hi - 0.05
    torch.testing.assert_close(col["crop"][:, 2:].double(), torch.stack((h / src_h, w / src_w), 1))
    centre_x = (left + w / 2) / src_w
    torch.testing.assert_close(col["crop"][:, 1].double(), torch.where(params.flip, 1 - centre_x, centre_x))


def test_crop_distribution_matches_torchvision_random_resized_crop() -> None:
    """Our batched rule against torchvision's own RandomResizedCrop.get_params (a loop, global RNG), compared by
    two-sample Kolmogorov-Smirnov tests on area, aspect ratio and position, on a source where ~0.3% fall back."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    scale, ratio, (src_h, src_w), n = (0.5, 0.9), (0.5, 2.0), (24, 40), 4000
    ours = ViewSampler(32, crop_scale=scale, crop_ratio=ratio).sample(torch.tensor([[src_h, src_w]] * n), gen(17))
    torch.manual_seed(18)
    theirs = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, src_h, src_w), list(scale), list(ratio))
                           for _ in range(n)], dtype=torch.float64)
    stats = []
    for crops in (ours.crop.double(), theirs):
        top, left, h, w = crops.unbind(1)
        stats.append((h * w, w / h, top / (src_h - h).clamp_min(1), left / (src_w - w).clamp_min(1)))
    for mine, reference in zip(*stats):
        assert ks_2samp(mine.numpy(), reference.numpy()).pvalue > 1e-3


def test_same_seed_same_views_other_seed_differs_and_generator_advances() -> None:
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=gen(12))
    sampler = ViewSampler(32)
    v1, w1 = sampler(images, generator=gen(0))
    v2, w2 = sampler(images, generator=gen(0))
    assert torch.equal(v1, v2) and torch.equal(w1, w2)
    v3, w3 = sampler(images, generator=gen(1))
    assert not torch.equal(w1, w3) and not torch.equal(v1, v3)
    g = gen(0)
    state = g.get_state()
    _, first = sampler(images, generator=g)
    assert not torch.equal(g.get_state(), state)
    _, second = sampler(images, generator=g)
    assert not torch.equal(first, second)


def test_params_for_other_images_are_rejected() -> None:
    sampler = ViewSampler(32)
    params = sampler.sample(torch.tensor([[40, 40]] * 4), gen(0))
    with pytest.raises(ValueError, match="sampled for 4 sources"):
        sampler.apply(torch.rand(4, 3, 41, 40), params)


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 1, 8, 8), "N x 3 x H x W"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "dtype"),
    ([torch.rand(3, 8, 8), torch.rand(8, 8)], "list of 3 x H x W"),
    ([], "non-empty"),
])
def test_bad_images_are_rejected(images: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViewSampler(8)(images)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, name", [
    ({"size": 0}, "size"),
    ({"flip_p": 1.5}, "flip_p"),
    ({"jitter_p": -0.1}, "jitter_p"),
    ({"gray_p": "high"}, "gray_p"),
    ({"crop_scale": (0.8, 0.2)}, "crop_scale"),
    ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
    ({"crop_ratio": (2.0, 1.0)}, "crop_ratio"),
    ({"jitter": (0.4, 0.4, 0.4, 0.6)}, "jitter"),
    ({"jitter": (0.4, 0.4, 0.4)}, "jitter"),
    ({"blur_sigma": (2.0, 0.1)}, "blur_sigma"),
    ({"blur_kernel": 4}, "blur_kernel"),
    ({"blur_kernel": 65, "size": 32}, "blur_kernel"),
    ({"antialias": 1}, "antialias"),
])
def test_invalid_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ViewSampler(**kwargs)


def test_config_round_trips_and_repr_lists_settings() -> None:
    sampler = ViewSampler(96, flip_p=0.25, jitter=(0.8, 0.8, 0.8, 0.2), antialias=False)
    config = sampler.config()
    assert config["blur_kernel"] == 9 and config["flip_p"] == 0.25
    assert ViewSampler(**config).config() == config
    assert all(f"{key}=" in repr(sampler) for key in config)


def test_select_omega_uses_canonical_order_and_validates_keys() -> None:
    omega = torch.arange(3 * OMEGA_DIM, dtype=torch.float32).view(3, OMEGA_DIM)
    picked = select_omega(omega, ["flip", "crop"])
    torch.testing.assert_close(picked, omega[:, 8:13])  # crop (8:12) then flip (12:13)
    assert torch.equal(select_omega(omega, OMEGA_KEYS), omega)
    assert select_omega(omega, []).shape == (3, 0)
    assert torch.equal(select_omega(omega, "blur"), omega[:, :1])
    assert [omega_dim(k) for k in (["crop"], ["crop", "color"], ["crop", "color", "color_diff"], OMEGA_KEYS)] == [
        4, 8, 11, 14]
    with pytest.raises(ValueError, match=r"'rotation'.*allowed keys are \['blur'"):
        select_omega(omega, ["crop", "rotation"])
    with pytest.raises(ValueError, match="more than once"):
        omega_dim(["crop", "color", "crop"])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 14\)"):
        select_omega(omega[:, :13], ["crop"])


def make_omega(crop: list[float], flip: float, color: list[float], blur: float, gray: float) -> torch.Tensor:
    w = torch.zeros(OMEGA_DIM)
    w[OMEGA_SLICES["crop"]] = torch.tensor(crop)
    w[OMEGA_SLICES["flip"]] = flip
    w[OMEGA_SLICES["color"]] = torch.tensor(color)
    w[OMEGA_SLICES["color_diff"]] = torch.tensor(color[:3]) / 10
    w[OMEGA_SLICES["blur"]] = blur
    w[OMEGA_SLICES["grayscale"]] = gray
    return w


def test_relative_omega_by_hand() -> None:
    # sample 0: neither flipped; sample 1: view 1 flipped (stored cx1 = 1 - 0.3); sample 2: only view 2 flipped
    omega1 = torch.stack([
        make_omega([0.5, 0.25, 0.5, 0.4], 0.0, [0.1, 0.2, -0.3, 0.4], 1.5, 0.0),
        make_omega([0.4, 0.7, 0.6, 0.6], 1.0, [0.0, 0.0, 0.0, 0.0], 0.0, 1.0),
        make_omega([0.3, 0.2, 0.2, 0.2], 0.0, [0.5, -0.5, 0.0, 0.0], 0.3, 1.0),
    ])
    omega2 = torch.stack([
        make_omega([0.25, 0.75, 0.3, 0.2], 0.0, [0.0, 0.2, 0.3, -0.1], 0.0, 0.0),
        make_omega([0.5, 0.6, 0.5, 0.5], 0.0, [0.2, 0.1, 0.0, -0.2], 0.5, 1.0),
        make_omega([0.3, 0.6, 0.2, 0.2], 1.0, [0.5, -0.5, 0.0, 0.0], 0.3, 0.0),  # source cx2 = 0.4
    ])
    rel = relative_omega(omega1, omega2, OMEGA_KEYS)
    assert list(rel) == list(OMEGA_KEYS)
    # crop: source centres 0.25 vs 0.75 -> -0.5; 0.3 vs 0.6 -> -0.3, negated in flipped view 1's frame -> 0.3;
    # 0.2 vs 0.4 -> -0.2 (view 2's flip does not change the offset between the crops)
    expected_crop = torch.tensor([[0.25, -0.5, 0.2, 0.2], [-0.1, 0.3, 0.1, 0.1], [0.0, -0.2, 0.0, 0.0]])
    torch.testing.assert_close(rel["crop"], expected_crop)
    torch.testing.assert_close(rel["flip"], torch.tensor([[1.0], [0.0], [0.0]]))
    torch.testing.assert_close(rel["grayscale"], torch.tensor([[1.0], [1.0], [0.0]]))
    torch.testing.assert_close(rel["blur"], torch.tensor([[1.5], [-0.5], [0.0]]))
    torch.testing.assert_close(rel["color"], torch.tensor([[0.1, 0.0, -0.6, 0.5], [-0.2, -0.1, 0.0, 0.2],
                                                           [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(rel["color_diff"], rel["color"][:, :3] / 10)
    assert set(relative_omega(omega1, omega2)) == {"crop", "color"}
    assert RELATIVE_BINARY_KEYS == {"flip", "grayscale"}


def test_relative_crop_equals_mirroring_both_centres_with_view_1_flip() -> None:
    """The authors' extract_diff formulation: mirror both (source) centres with view 1's flip, then subtract."""
    sampler = ViewSampler(16)
    images = torch.randint(0, 256, (64, 3, 30, 50), dtype=torch.uint8, generator=gen(13))
    _, omega1 = sampler(images, generator=gen(14))
    _, omega2 = sampler(images, generator=gen(15))

    def source_centre(w: torch.Tensor) -> torch.Tensor:
        cx = w[:, OMEGA_SLICES["crop"]][:, 1]
        return torch.where(w[:, OMEGA_SLICES["flip"]].squeeze(1) == 1, 1 - cx, cx)

    f1 = omega1[:, OMEGA_SLICES["flip"]].squeeze(1) == 1
    c1, c2 = source_centre(omega1), source_centre(omega2)
    authors_dx = torch.where(f1, 1 - c1, c1) - torch.where(f1, 1 - c2, c2)
    torch.testing.assert_close(relative_omega(omega1, omega2)["crop"][:, 1], authors_dx)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_give_the_cpu_result() -> None:
    images = torch.randint(0, 256, (16, 3, 48, 40), dtype=torch.uint8, generator=gen(16))
    sampler = ViewSampler(32)
    views, omega = sampler(images, generator=gen(0))
    views_cuda, omega_cuda = sampler(images.cuda(), generator=gen(0))
    assert views_cuda.device.type == "cuda" and omega_cuda.device.type == "cuda"
    torch.testing.assert_close(omega_cuda.cpu(), omega, rtol=0, atol=1e-5)
    torch.testing.assert_close(views_cuda.cpu(), views, rtol=0, atol=1e-4)


# --- fast paths (cassle.augment.render / resize): against torchvision and the one-chunk rendering ---------------

AA_SOURCES = {  # images, view size
    "uint8 batch, non-square": (lambda: torch.randint(0, 256, (20, 3, 90, 70), dtype=torch.uint8, generator=gen(20)),
                                48),
    "float list of sizes": (lambda: [pink_noise(s, s)[:, : s - 7] for s in (40, 64, 90, 128, 33)] * 3, 32),
    "tiny images, 2 px views": (lambda: [torch.rand(3, h, w, generator=gen(h * w))
                                         for h, w in [(3, 5), (7, 2), (4, 4)]] * 4, 2),
}


@pytest.mark.parametrize("source", AA_SOURCES)
def test_antialiased_views_equal_torchvision_antialias(source: str, renderer: str) -> None:
    """Crops downscaled on one or both axes (and upscaled ones) with flips, near every image edge: the separable
    sparse resampling equals torchvision's antialiased resize up to float rounding."""
    make_images, size = AA_SOURCES[source]
    images = make_images()
    views, omega = ViewSampler(size, crop_scale=(0.05, 1.0), crop_ratio=(0.5, 2.0), **GEOMETRY_ONLY)(
        images, generator=gen(21))
    crop_side = (omega[:, OMEGA_SLICES["crop"]][:, 2:] * torch.tensor([im.shape[1:] for im in images])).amax(1)
    assert (crop_side > size + 0.5).sum() >= 2 and (crop_side < size - 0.5).sum() >= 2  # down- and upscaled
    assert 0 < omega[:, OMEGA_SLICES["flip"]].sum() < len(images)
    for image, view, w in zip(images, views, omega):
        torch.testing.assert_close(view, rebuild_from_omega(image, w, size, antialias=True), rtol=0, atol=3e-5)


@pytest.mark.parametrize("source", SOURCES)
def test_fused_cpu_renderer_equals_the_eager_path(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numba renderer and the eager ops (those of other devices) give the same views and omega, every
    augmentation on and crops from 5% to the whole image."""
    import cassle.augment.render as render

    images = SOURCES[source]()
    sampler = ViewSampler(32, crop_scale=(0.05, 1.0), jitter=(0.6, 0.6, 0.6, 0.5), gray_p=0.3)
    params = sampler.sample(image_sizes(images), gen(22))
    assert params.jitter.any() and params.grayscale.any() and params.blur.any() and not params.blur.all()
    views, omega = sampler.apply(images, params)
    monkeypatch.setattr(render, "FUSED_CPU", False)
    views_eager, omega_eager = sampler.apply(images, params)
    # the eager path blurs a batch with the kernel size its largest sigma needs: other far taps (< 1e-7 of the peak)
    torch.testing.assert_close(views, views_eager, rtol=0, atol=1e-5)
    keys = [k for k in OMEGA_KEYS if k != "color_diff"]
    assert torch.equal(select_omega(omega, keys), select_omega(omega_eager, keys))
    torch.testing.assert_close(omega, omega_eager, rtol=0, atol=1e-6)  # channel means summed in another order


def test_render_order_puts_jittered_samples_first_grouped_by_op_order() -> None:
    from cassle.augment.functional import jitter_order_code
    from cassle.augment.render import render_order

    params = ViewSampler(32).sample(torch.tensor([[40, 48]] * 50), gen(23))
    order = render_order(params)
    assert torch.equal(order.sort().values, torch.arange(50))
    jittered = params.jitter[order]
    assert 0 < jittered.sum() < 50 and jittered.tolist() == sorted(jittered.tolist(), reverse=True)
    codes = jitter_order_code(params.order[order])[jittered].tolist()
    assert codes == sorted(codes)


def _render_in_forked_child(images: torch.Tensor, connection) -> None:  # noqa: ANN001 - a multiprocessing Connection
    torch.set_num_threads(1)  # as in a DataLoader worker (torch's own ops need it after a fork)
    views, omega = ViewSampler(32)(images, generator=gen(25))
    connection.send((views.numpy(), omega.numpy()))  # plain arrays: torch would share the storage with the parent


def test_fused_renderer_works_in_a_forked_child_after_the_parent_used_it() -> None:
    """numba's OpenMP layer would kill a forked child that renders (e.g. a DataLoader worker); the workqueue layer,
    which cassle.augment.fused selects, renders there the views of the parent."""
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=gen(24))
    views, omega = ViewSampler(32)(images, generator=gen(25))
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_render_in_forked_child, args=(images, send))
    child.start()
    send.close()  # so that a child that dies closes the pipe
    try:
        child_views, child_omega = receive.recv() if receive.poll(60) else (None, None)
    except EOFError:
        child_views = None
    child.join(10)
    assert child_views is not None and child.exitcode == 0, f"the forked child failed (exit code {child.exitcode})"
    assert torch.equal(torch.from_numpy(child_views), views) and torch.equal(torch.from_numpy(child_omega), omega)


def test_fused_renderer_serves_several_python_threads_at_once() -> None:
    """numba's workqueue layer aborts the process when two threads enter it; the renderer serialises them."""
    images = torch.randint(0, 256, (32, 3, 40, 40), dtype=torch.uint8, generator=gen(26))
    sampler = ViewSampler(32)
    expected, _ = sampler(images, generator=gen(27))
    results: list[torch.Tensor] = []

    def render_several() -> None:
        results.extend(sampler(images, generator=gen(27))[0] for _ in range(5))

    threads = [threading.Thread(target=render_several) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20 and all(torch.equal(views, expected) for views in results)


def test_gpu_rendering_needs_no_numba() -> None:
    """Only the CPU renderer imports numba: cassle.augment and the eager path work where it is missing (the GPU
    machines that run bench/gpu.sh with their own PyTorch)."""
    code = ("import sys; sys.modules['numba'] = None\n"
            "import torch, cassle.augment.render as render\n"
            "from cassle.augment import ViewSampler\n"
            "render.FUSED_CPU = False\n"
            "views, omega = ViewSampler(16)(torch.rand(4, 3, 20, 20))\n"
            "assert views.shape == (4, 3, 16, 16) and 'cassle.augment.fused' not in sys.modules\n"
            "render.FUSED_CPU = True\n"
            "try:\n"
            "    ViewSampler(16)(torch.rand(4, 3, 20, 20))\n"
            "except ImportError:\n"
            "    print('fused path needs numba')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fused path needs numba"


def test_each_slice_of_a_global_batch_gets_the_parameters_the_whole_batch_would():
    """Distributed training: a process renders rows [position, position + N) of the global batch with the views one
    process would draw for the whole batch, whatever the sizes of the other processes' images."""
    sampler = ViewSampler(size=16)
    sizes = torch.tensor([[32, 40], [20, 64], [48, 48], [33, 17], [64, 30], [24, 24]])
    whole = sampler.sample(sizes, torch.Generator().manual_seed(3))
    parts = [sampler.sample(sizes[i:i + 2], torch.Generator().manual_seed(3), position=i, total=6) for i in (0, 2, 4)]
    for field in dataclasses.fields(ViewParams):
        assert torch.equal(torch.cat([getattr(part, field.name) for part in parts]), getattr(whole, field.name))
    with pytest.raises(ValueError, match="position must be >= 0 and position \\+ N <= total"):
        sampler.sample(sizes[:4], torch.Generator().manual_seed(3), position=4, total=6)
