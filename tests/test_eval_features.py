"""Loading sources (run folders, external state dicts), feature extraction, TenCrop and the feature cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import TensorDataset

from cassle.apps.engine.trainer import pretrain
from cassle.augment import OMEGA_DIM
from cassle.config import resolve
from cassle.evaluate.features import (
    cached_features,
    eval_transform,
    extract_features,
    feature_key,
    split_features,
    split_transform,
    tencrop_transform,
)
from cassle.evaluate.load import load_backbone, load_method, unwrap_state_dict
from cassle.nets import IMAGENET_MEAN, IMAGENET_STD

RUN_CONFIG = {"framework": "mocov2", "variant": "cassle", "backbone": "resnet_narrow", "dataset": "synthetic",
              "max_steps": 2, "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32, "queue_size": 64,
              "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16, "num_workers": 0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    pretrain(resolve(RUN_CONFIG), out, progress=False)
    return out


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torchvision.models.ResNet]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that a wrong load would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("external") / "r18.pt"
    torch.save(model.state_dict(), path)
    return path, model


def _normalized(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def test_run_folder_loads_the_pretrained_backbone(run_dir: Path) -> None:
    backbone, info = load_backbone(run_dir, device="cpu")
    assert info["kind"] == "run" and info["arch"] == "resnet_narrow" and info["image_size"] == 32
    assert info["cifar_stem"] is True and info["config"]["framework"] == "mocov2"
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    saved = torch.load(run_dir / "backbone.pt", weights_only=True)
    for key, value in backbone.export_state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_load_method_matches_the_checkpoint(run_dir: Path) -> None:
    method = load_method(run_dir, device="cpu")
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert not method.training and method.conditioning is not None
    backbone, _ = load_backbone(run_dir, device="cpu")
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(method.embed(x), backbone(_normalized(x)))
    assert method.project(method.embed(x), torch.rand(4, OMEGA_DIM)).shape == (4, 32)


def test_load_method_refuses_a_state_dict(resnet18_file) -> None:
    with pytest.raises(ValueError, match="needs a pretraining run folder"):
        load_method(resnet18_file[0])


def test_state_dict_features_equal_torchvision(resnet18_file) -> None:
    path, model = resnet18_file
    backbone, info = load_backbone(path, arch="resnet18", device="cpu")
    assert info["kind"] == "state_dict" and info["cifar_stem"] is False and info["image_size"] == 224
    images = torch.rand(3, 3, 32, 32)
    model.fc = torch.nn.Identity()
    features = extract_features(backbone, TensorDataset(images, torch.arange(3)), batch_size=2, device="cpu",
                                progress=False)
    with torch.no_grad():
        expected = model(_normalized(images))
    torch.testing.assert_close(features["x"], expected)
    assert features["y"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(("wrapper", "prefix"), [("state_dict", "module.encoder_q."), ("model", "module."),
                                                  ("backbone", "")])
def test_wrapped_and_prefixed_checkpoints(resnet18_file, tmp_path: Path, wrapper: str, prefix: str) -> None:
    path, model = resnet18_file
    state = torch.load(path, weights_only=True)
    wrapped = {"epoch": 3, wrapper: {prefix + key: value for key, value in state.items()}}
    file = tmp_path / "wrapped.pt"
    torch.save(wrapped, file)
    backbone, _ = load_backbone(file, arch="resnet18", device="cpu")
    torch.testing.assert_close(backbone.net.layer3[0].conv1.weight, model.layer3[0].conv1.weight, rtol=0, atol=0)


def test_cifar_stem_is_detected(tmp_path: Path) -> None:
    from cassle.nets import build_backbone

    source = build_backbone("resnet18", cifar_stem=True)
    torch.save(source.export_state_dict(), tmp_path / "cifar.pt")
    backbone, info = load_backbone(tmp_path / "cifar.pt", arch="resnet18", device="cpu")
    assert info["cifar_stem"] is True and info["image_size"] == 32
    assert backbone.net.conv1.kernel_size == (3, 3)


def test_wrong_architecture_names_the_keys(resnet18_file) -> None:
    with pytest.raises(ValueError, match=r"does not fit backbone 'resnet50'.*layer1\.0\.conv3\.weight"):
        load_backbone(resnet18_file[0], arch="resnet50", device="cpu")


def test_source_errors(tmp_path: Path, resnet18_file) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "nothing")
    with pytest.raises(ValueError, match="--arch"):
        load_backbone(resnet18_file[0])
    with pytest.raises(FileNotFoundError, match="no backbone.pt"):
        load_backbone(tmp_path)
    with pytest.raises(ValueError, match="holds no state dict"):
        unwrap_state_dict({"epoch": 1}, tmp_path / "x.pt")


def test_tencrop_shapes_and_repeated_labels() -> None:
    image = Image.new("RGB", (300, 260), (10, 200, 30))
    assert tencrop_transform(224)(image).shape == (10, 3, 224, 224)
    assert tencrop_transform(32)(image).shape == (10, 3, 32, 32)
    assert eval_transform(32)(image).shape == (3, 32, 32)
    assert split_transform("cub200", "train", 32).transforms[0].size == 37  # 32 * 256 / 224
    assert split_transform("cub200", "test", 224)(image).shape == (3, 224, 224)
    assert split_transform("synthetic", "train", 32)(image).shape == (3, 32, 32)

    from cassle.nets import build_backbone

    backbone = build_backbone("resnet_narrow", cifar_stem=True).eval()
    crops = torch.rand(3, 10, 3, 16, 16)
    features = extract_features(backbone, TensorDataset(crops, torch.tensor([4, 5, 6])), 2, "cpu", progress=False)
    assert features["x"].shape == (30, backbone.num_features)
    assert features["y"].tolist() == [4] * 10 + [5] * 10 + [6] * 10
    with torch.no_grad():
        torch.testing.assert_close(features["x"][10:20], backbone(_normalized(crops[1])))


def test_stage_features_are_pooled_maps() -> None:
    from cassle.nets import build_backbone

    backbone = build_backbone("resnet_narrow", cifar_stem=True).eval()
    images = torch.rand(2, 3, 16, 16)
    features = extract_features(backbone, TensorDataset(images, torch.zeros(2)), 4, "cpu", stage="layer2",
                                progress=False)
    with torch.no_grad():
        expected = backbone.forward_stages(_normalized(images))["layer2"].mean(dim=(2, 3))
    torch.testing.assert_close(features["x"], expected)
    with pytest.raises(ValueError, match="stage 'layer9'"):
        extract_features(backbone, TensorDataset(images, torch.zeros(2)), 4, "cpu", stage="layer9")


def test_cache_is_reused_and_refused_for_another_source(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.full((2, 3), float(len(calls))), "y": torch.tensor([0, 1])}

    info = {"sha256": "aaa", "arch": "resnet18", "mean": [0.5] * 3, "std": [0.2] * 3}
    key = feature_key(info, "synthetic", "train", eval_transform(32))
    first = cached_features(tmp_path, "train", compute, key)
    second = cached_features(tmp_path, "train", compute, key)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"])
    assert (tmp_path / "features" / "train.pt").is_file() and (tmp_path / "features" / "train.json").is_file()

    other = feature_key({**info, "sha256": "bbb"}, "synthetic", "train", eval_transform(32))
    with pytest.warns(UserWarning, match="source_sha256"):
        third = cached_features(tmp_path, "train", compute, other)
    assert len(calls) == 2 and third["x"][0, 0] == 2
    with pytest.warns(UserWarning, match="transform"):
        cached_features(tmp_path, "train", compute, feature_key({**info, "sha256": "bbb"}, "synthetic", "train",
                                                                 eval_transform(64)))
    assert len(calls) == 3


def test_split_features_of_a_run(run_dir: Path, tmp_path: Path) -> None:
    backbone, info = load_backbone(run_dir, device="cpu")
    kwargs = {"batch_size": 32, "device": "cpu", "max_images": 40, "progress": False}
    features = split_features(backbone, info, "synthetic", "val", tmp_path, **kwargs)
    assert features["x"].shape == (40, backbone.num_features) and features["y"].shape == (40,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reused cache raises no warning
        again = split_features(backbone, info, "synthetic", "val", tmp_path, **kwargs)
    assert torch.equal(features["x"], again["x"])
    with pytest.raises(ValueError, match="max_images"):
        split_features(backbone, info, "synthetic", "test", tmp_path, **{**kwargs, "max_images": 0})
