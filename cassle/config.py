"""Pretraining configuration: loading YAML, `--set key=value` overrides, per-framework defaults, validation.

A config is a flat mapping of the keys in `FIELDS` (nested sections are written with dots: `augment.blur_p`).
Every key is validated before any work starts: unknown keys, wrong types and impossible values raise one
`ConfigError` that names the key, the value and what is allowed. Keys left unset (None) take the framework's
defaults (the paper's Table 5 and the reference notes), then the dataset's.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cassle.methods import METHODS, framework_defaults

FRAMEWORKS = tuple(METHODS)
VARIANTS = ("vanilla", "augself", "cassle")
BACKBONES = ("resnet18", "resnet50", "vit_small", "resnet_narrow")
OMEGA_KEYS = ("blur", "color", "color_diff", "crop", "flip", "grayscale")
INJECTIONS = ("cat", "add", "mul", "hypernet")
OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = ("auto", "fp32", "bf16")
COMPAT = ("original", "authors")
# Keys that say where and how fast a run happens, not what it computes: left out of the experiment hash, so a run
# resumes on another machine, with other paths or worker counts.
RUNTIME_KEYS = frozenset({"data_root", "num_workers", "device", "log_every", "checkpoint_every"})
IMAGE_SIZES = {"cifar10": 32, "cifar100": 32, "synthetic": 32, "stl10": 96}  # others: 224


class ConfigError(ValueError):
    """A config key has a bad value: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Field:
    """One config key: its type, default (None = framework/dataset default) and a check of its value."""

    kind: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns what is allowed when the value is not


def choice(options: Iterable[str]) -> Callable[[Any], str | None]:
    options = tuple(options)
    return lambda value: None if value in options else f"one of {', '.join(options)}"


def positive(value: Any) -> str | None:
    return None if value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def probability(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "a probability in [0, 1]"


def interval(value: Any) -> str | None:
    ok = len(value) == 2 and all(isinstance(v, (int, float)) for v in value) and value[0] <= value[1]
    return None if ok else "a list [low, high] of two numbers with low <= high"


def omega_keys(value: Any) -> str | None:
    ok = len(value) > 0 and all(key in OMEGA_KEYS for key in value) and len(set(value)) == len(value)
    return None if ok else f"a non-empty list of distinct keys among {', '.join(OMEGA_KEYS)}"


def augself_weights(value: Any) -> str | None:
    ok = all(key in OMEGA_KEYS and isinstance(w, (int, float)) and w > 0 for key, w in value.items())
    return None if ok and value else f"a non-empty mapping from keys among {', '.join(OMEGA_KEYS)} to weights > 0"


FIELDS: dict[str, Field] = {
    "framework": Field(str, None, "SSL framework", choice(FRAMEWORKS)),
    "variant": Field(str, "vanilla", "vanilla, augself (auxiliary omega prediction) or cassle (conditioned "
                     "projector)", choice(VARIANTS)),
    "backbone": Field(str, None, "feature extractor", choice(BACKBONES)),
    "cifar_stem": Field(bool, None, "3x3 stride-1 first conv without max-pool (default: on for images <= 64 px)"),
    "dataset": Field(str, "synthetic", "pretraining dataset (registry name)"),
    "data_root": Field((str, type(None)), None, "local folder of the dataset (not needed for synthetic)"),
    "image_size": Field((int, type(None)), None, "view size in pixels (default: the dataset's)", positive),
    "epochs": Field((int, type(None)), None, "training epochs (default: the framework's)", positive),
    "max_steps": Field((int, type(None)), None, "stop after this many optimiser steps (overrides epochs)", positive),
    "batch_size": Field((int, type(None)), None, "global batch size over all processes", positive),
    "seed": Field(int, 0, "seed of data order, augmentation and initialisation"),
    "optimizer": Field((str, type(None)), None, "sgd, lars or adamw", choice(OPTIMIZERS)),
    "base_lr": Field((float, type(None)), None, "learning rate at batch 256 (scaled linearly)", positive),
    "weight_decay": Field((float, type(None)), None, "weight decay", non_negative),
    "momentum": Field(float, 0.9, "SGD/LARS momentum", probability),
    "warmup_epochs": Field((float, type(None)), None, "linear warm-up length in epochs", non_negative),
    "temperature": Field((float, type(None)), None, "contrastive temperature", positive),
    "queue_size": Field((int, type(None)), None, "MoCo-v2/v1 negatives queue length", positive),
    "ema": Field((float, type(None)), None, "momentum-encoder rate at the start", probability),
    "ema_final": Field((float, type(None)), None, "momentum-encoder rate at the end (cosine increase)", probability),
    "lambd": Field((float, type(None)), None, "Barlow Twins off-diagonal weight", positive),
    "projector.num_layers": Field((int, type(None)), None, "projector depth (default: the framework's)", positive),
    "projector.hidden_dim": Field((int, type(None)), None, "projector hidden width (default: the framework's)",
                                  positive),
    "projector.out_dim": Field((int, type(None)), None, "projector output size (default: the framework's)", positive),
    "predictor.hidden_dim": Field((int, type(None)), None, "predictor hidden width (default: the framework's)",
                                  positive),
    "compat": Field(str, "original", "original: the methods as published; authors: the CASSLE authors' code "
                    "where the paper's numbers depend on it (docs/differences.md)", choice(COMPAT)),
    "conditioning.omega_keys": Field(list, list(OMEGA_KEYS), "omega keys the projector is conditioned on",
                                     omega_keys),
    "conditioning.encoder_depth": Field(int, 6, "augmentation encoder depth (0: raw omega)", non_negative),
    "conditioning.encoder_width": Field(int, 64, "augmentation encoder width", positive),
    "conditioning.injection": Field(str, "cat", "how omega enters the projector", choice(INJECTIONS)),
    "conditioning.hypernet_bn": Field(bool, False, "BatchNorm between hypernetwork-generated layers"),
    "augself.weights": Field(dict, {"crop": 0.5, "color": 0.5}, "AugSelf heads: omega key -> loss weight",
                             augself_weights),
    "augment.crop_scale": Field(list, [0.2, 1.0], "RandomResizedCrop area range", interval),
    "augment.crop_ratio": Field(list, [3 / 4, 4 / 3], "RandomResizedCrop aspect-ratio range", interval),
    "augment.flip_p": Field(float, 0.5, "horizontal flip probability", probability),
    "augment.jitter_p": Field(float, 0.8, "colour jitter probability", probability),
    "augment.jitter": Field(list, [0.4, 0.4, 0.4, 0.1], "brightness, contrast, saturation, hue strengths"),
    "augment.gray_p": Field(float, 0.2, "grayscale probability", probability),
    "augment.blur_p": Field(float, 0.5, "Gaussian blur probability", probability),
    "augment.blur_sigma": Field(list, [0.1, 2.0], "blur sigma range", interval),
    "checkpoint_every": Field(int, 500, "steps between resumable checkpoints", positive),
    "log_every": Field(int, 10, "steps between history rows", positive),
    "num_workers": Field(int, 4, "data-loading worker processes", non_negative),
    "device": Field(str, "auto", "auto (cuda when available), cpu or cuda[:N]"),
    "precision": Field(str, "auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", choice(PRECISIONS)),
    "channels_last": Field((bool, type(None)), None, "channels_last memory format (default: on CUDA)"),
    "compile": Field(bool, False, "torch.compile the backbone"),
}


def suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_value(key: str, value: Any) -> Any:
    """Validate one key's value, converting ints to floats where a float is expected; raise ConfigError if bad."""
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {key!r}{suggestion(key)}; allowed keys: {', '.join(FIELDS)}")
    field = FIELDS[key]
    kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise ConfigError(f"config key {key!r} = {value!r} has type {type(value).__name__}; expected {names}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} = {value!r} is not a finite number")
    if value is not None and field.check is not None:
        try:
            allowed = field.check(value)
        except TypeError:
            allowed = field.help
        if allowed is not None:
            raise ConfigError(f"config key {key!r} = {value!r} is not allowed; expected {allowed}")
    return value


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, except for keys whose value is itself a mapping (augself.weights)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} is not a string")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in FIELDS:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (so `epochs=5`, `omega_keys=[crop,color]`, `data_root=null`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. --set epochs=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error.__class__.__name__})") from None
    return key.strip(), value


def load_config(path: Path | str | None = None, overrides: Iterable[str] = (),
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config (or start from `base`), apply `key=value` overrides, validate, fill defaults."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(loaded).__name__}")
        raw.update(flatten(loaded or {}))
    for text in overrides:
        key, value = parse_override(text)
        raw.update(flatten({key: value}))
    return resolve(raw)


def resolve(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a flat mapping and fill every default: the result has every key of FIELDS."""
    config = {key: check_value(key, value) for key, value in flatten(raw).items()}
    if config.get("framework") is None:
        raise ConfigError(f"config key 'framework' is required; one of {', '.join(FRAMEWORKS)}")
    defaults = framework_defaults(config["framework"])
    defaults.setdefault("image_size", IMAGE_SIZES.get(config.get("dataset", FIELDS["dataset"].default), 224))
    for key, field in FIELDS.items():
        if config.get(key) is None:
            config[key] = defaults.get(key, field.default)
    if config["cifar_stem"] is None:
        config["cifar_stem"] = config["image_size"] <= 64 and config["backbone"] != "vit_small"
    check_combinations(config)
    return dict(sorted(config.items()))


def check_combinations(config: Mapping[str, Any]) -> None:
    """Constraints between keys."""
    if config["framework"] == "mocov1" and config["conditioning.injection"] != "add" and config["variant"] == "cassle":
        raise ConfigError("config key 'conditioning.injection' = "
                          f"{config['conditioning.injection']!r} is not allowed with framework mocov1 (it has no "
                          "projector: CASSLE adds the augmentation embedding to the features); use 'add'")
    if config["epochs"] is None and config["max_steps"] is None:
        raise ConfigError("set 'epochs' or 'max_steps'")
    if len(config["augment.jitter"]) != 4 or not all(isinstance(v, (int, float)) and v >= 0
                                                      for v in config["augment.jitter"]):
        raise ConfigError(f"config key 'augment.jitter' = {config['augment.jitter']!r}; expected four numbers >= 0 "
                          "(brightness, contrast, saturation, hue)")


def experiment_hash(config: Mapping[str, Any]) -> str:
    """The config hash of what a run computes (RUNTIME_KEYS left out): names run folders and guards resumes."""
    from cassle.provenance import config_hash

    return config_hash({key: value for key, value in config.items() if key not in RUNTIME_KEYS})


def reference_table() -> str:
    """The Markdown table of every config key (docs/config.md embeds it; a test keeps the two equal)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in FIELDS.items():
        kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
        kind = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        default = "framework / dataset default" if field.default is None else f"`{field.default}`"
        lines.append(f"| `{key}` | {kind} | {default} | {field.help} |")
    return "\n".join(lines)
