"""Loading what an evaluation runs on: a pretraining run folder or an external torchvision ResNet state_dict.

`load_backbone` returns a frozen backbone in eval mode and a plain dict describing its source::

    {"kind": "run" | "state_dict", "path": str, "sha256": hex digest of the weights file,
     "arch": backbone name, "cifar_stem": bool, "image_size": int, "config": resolved run config or None,
     "mean": [3 floats], "std": [3 floats]}   # the input normalisation the backbone was trained with

`load_method` rebuilds a whole pretrained model (backbone + (conditioned) projector) from a run folder.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cassle.core.devices import resolve_device
from cassle.core.io import file_sha256, read_json
from cassle.methods import Method, build_method
from cassle.nets import Backbone, build_backbone, input_statistics, resnet_names

# Where external checkpoints keep the backbone's state dict, and the prefixes their keys may carry (tried in order).
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "backbone", "model")
KEY_PREFIXES: tuple[str, ...] = (
    "", "module.", "encoder_q.", "module.encoder_q.", "backbone.", "module.backbone.", "backbone.net.",
)
RUN_FILES = ("backbone.pt", "checkpoint.pt", "metrics.json")


def _torch_load(path: Path) -> Any:
    """torch.load on CPU with weights_only=True (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects other than tensors and plain containers ({str(error).splitlines()[0]}); "
            "re-save only its weights, e.g. torch.save(checkpoint['state_dict'], 'weights.pt')"
        ) from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path} is not a readable torch file ({error}); is it truncated or another format?") \
            from None


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved pretraining config of a run folder (from metrics.json, else checkpoint.pt)."""
    if (run_dir / "metrics.json").is_file():
        config = read_json(run_dir / "metrics.json").get("config")
        if isinstance(config, dict):
            return config
    if (run_dir / "checkpoint.pt").is_file():
        config = _torch_load(run_dir / "checkpoint.pt").get("config")
        if isinstance(config, dict):
            return config
    raise FileNotFoundError(
        f"{run_dir} is not a finished pretraining run: neither metrics.json nor checkpoint.pt holds its config "
        f"(a run folder has {', '.join(RUN_FILES)}); run `cassle pretrain` to the end or pass the right folder"
    )


def unwrap_state_dict(checkpoint: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    """The ResNet state dict inside an external checkpoint and the prefix of its keys.

    Accepts a plain state dict or one nested under "state_dict"/"backbone"/"model", with keys prefixed by
    "module.", "encoder_q." (MoCo), "backbone." or nothing.
    """
    state = checkpoint
    while isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[key] for key in WRAPPER_KEYS if isinstance(state.get(key), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        found = sorted(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{path} holds no state dict (found {found}); expected a torchvision ResNet state_dict, possibly under "
            f"one of the keys {', '.join(WRAPPER_KEYS)}"
        )
    for prefix in KEY_PREFIXES:
        if f"{prefix}conv1.weight" in state:
            return dict(state), prefix
    raise ValueError(
        f"{path}: no ResNet first convolution among its keys (looked for conv1.weight with prefixes "
        f"{', '.join(repr(p) for p in KEY_PREFIXES)}; first keys: {', '.join(list(state)[:5])}); "
        "pass a torchvision ResNet state_dict"
    )


def _freeze(backbone: Backbone, device: torch.device) -> Backbone:
    return backbone.requires_grad_(False).eval().to(device)


def _load_run_backbone(run_dir: Path, arch: str | None) -> tuple[Backbone, dict[str, Any]]:
    weights = run_dir / "backbone.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir} has no backbone.pt: it is not a finished pretraining run "
                                "(run `cassle pretrain` to the end, or pass a state_dict file with --arch)")
    config = run_config(run_dir)
    if arch is not None and arch != config["backbone"]:
        raise ValueError(f"--arch {arch} does not match the run {run_dir}, which pretrained a {config['backbone']}; "
                         "leave --arch out for run folders")
    backbone = build_backbone(config["backbone"], config["cifar_stem"], image_size=config["image_size"])
    backbone.load_torchvision_state_dict(_torch_load(weights))
    mean, std = map(list, input_statistics(config["dataset"]))
    info = {"kind": "run", "path": str(run_dir), "sha256": file_sha256(weights), "arch": config["backbone"],
            "cifar_stem": config["cifar_stem"], "image_size": config["image_size"], "config": config,
            "mean": mean, "std": std}
    return backbone, info


def _load_external_backbone(path: Path, arch: str | None, image_size: int | None) -> tuple[Backbone, dict[str, Any]]:
    if arch not in resnet_names():
        raise ValueError(f"{path} is a state_dict file, so its architecture must be given: --arch one of "
                         f"{', '.join(resnet_names())} (got {arch!r})")
    state, prefix = unwrap_state_dict(_torch_load(path), path)
    cifar_stem = state[f"{prefix}conv1.weight"].shape[-1] == 3  # torchvision's stem is 7x7, the CIFAR one 3x3
    backbone = build_backbone(arch, cifar_stem)
    backbone.load_torchvision_state_dict(state, prefix)
    mean, std = map(list, input_statistics(None))
    info = {"kind": "state_dict", "path": str(path), "sha256": file_sha256(path), "arch": arch,
            "cifar_stem": cifar_stem, "image_size": image_size or (32 if cifar_stem else 224), "config": None,
            "mean": mean, "std": std}
    return backbone, info


def load_backbone(
    source: Path | str, arch: str | None = None, device: str | torch.device | None = None,
    image_size: int | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """A frozen backbone in eval mode on `device` and the dict describing its source (module docstring).

    `source`: a pretraining run folder (architecture and image size from its config; `arch` must be None or
    agree) or a .pt file holding a torchvision ResNet state_dict (`arch` required; the CIFAR stem is detected
    from conv1's kernel; `image_size` defaults to 32 for a CIFAR stem, else 224).
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint source {path} does not exist; pass a pretraining run folder or a "
                                ".pt state_dict file")
    if image_size is not None and image_size <= 0:
        raise ValueError(f"image size must be a positive number of pixels, got {image_size}")
    if path.is_dir():
        backbone, info = _load_run_backbone(path, arch)
        if image_size is not None:
            info["image_size"] = image_size
    else:
        backbone, info = _load_external_backbone(path, arch, image_size)
    return _freeze(backbone, resolve_device(device)), info


def load_method(run_dir: Path | str, device: str | torch.device | None = None) -> Method:
    """The whole pretrained model of a run folder (backbone, (conditioned) projector, ...), frozen, eval mode."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder: this evaluation needs a pretraining run folder (with "
                         f"{', '.join(RUN_FILES)}) because it uses the projector; a plain state_dict has only the "
                         "backbone")
    if not (path / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{path} has no checkpoint.pt: it is not a finished pretraining run "
                                "(run `cassle pretrain` to the end)")
    checkpoint = _torch_load(path / "checkpoint.pt")
    method: Method = build_method(checkpoint["config"])
    method.load_state_dict(checkpoint["model"])
    return method.requires_grad_(False).eval().to(resolve_device(device))
