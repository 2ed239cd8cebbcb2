"""Pretraining configuration: loading YAML, `--set key=value` overrides, per-framework defaults, validation.

A config is a flat mapping of the keys in `FIELDS` (nested sections are written with dots: `augment.blur_p`).
Every key is validated before any work starts: unknown keys, wrong types and impossible values raise one
`ConfigError` that names the key, the value and what is allowed. Keys left unset (None) take the framework's
defaults (the paper's Table 5 and the reference notes), then the dataset's.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cassle.augment import OMEGA_KEYS
from cassle.core.identity import config_hash
from cassle.core.optim import OPTIMIZERS
from cassle.data import get_dataset, list_datasets
from cassle.methods import FRAMEWORKS, VARIANTS, framework_defaults
from cassle.nets import BACKBONES, INJECTIONS, ConditioningError

PRECISIONS = ("auto", "fp32", "bf16")
COMPAT = ("original", "authors")
BACKBONE_INITS = ("torchvision", "authors")
# Keys that say where and how fast a run happens, not what it computes: left out of the experiment hash, so a run
# resumes on another machine, with other paths or worker counts.
RUNTIME_KEYS = frozenset({"data_root", "num_workers", "device", "log_every", "checkpoint_every"})


class ConfigError(ValueError):
    """A config key has a bad value: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Field:
    """One config key: its type, default (None = framework/dataset default) and a check of its value."""

    kind: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns what is allowed when the value is not


def choice(options: Collection[str]) -> Callable[[Any], str | None]:
    """A check of membership in `options`, read when a value is checked (a registry may grow after import)."""
    return lambda value: None if value in options else f"one of {', '.join(options)}"


def positive(value: Any) -> str | None:
    return None if value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def probability(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "a probability in [0, 1]"


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float (integers of hundreds of digits are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def interval(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    """A check of `[lo, hi]`: two finite numbers with low < lo <= hi (<= high when given)."""
    bounds = f"{low} < low <= high" + ("" if high is None else f" <= {high}")

    def check(value: Any) -> str | None:
        ok = len(value) == 2 and all(finite_number(v) for v in value) and low < value[0] <= value[1] \
            and (high is None or value[1] <= high)
        return None if ok else f"a list [low, high] of two finite numbers with {bounds}"
    return check


def jitter_strengths(value: Any) -> str | None:
    ok = len(value) == 4 and all(finite_number(v) and v >= 0 for v in value) and value[3] <= 0.5
    return None if ok else "four finite numbers >= 0 (brightness, contrast, saturation, hue) with hue <= 0.5"


def seed_range(value: Any) -> str | None:
    return None if 0 <= value < 2**32 else "an integer in [0, 2**32 - 1]"


def device_name(value: Any) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) else "auto, cpu, cuda or cuda:N (N a GPU index)"


def pretrain_dataset(value: Any) -> str | None:
    names = list_datasets("pretrain")
    return None if value in names else f"a dataset registered for pretraining: one of {', '.join(names)}"


def omega_keys(value: Any) -> str | None:
    ok = len(value) > 0 and all(key in OMEGA_KEYS for key in value) and len(set(value)) == len(value)
    return None if ok else f"a non-empty list of distinct keys among {', '.join(OMEGA_KEYS)}"


def augself_weights(value: Any) -> str | None:
    ok = all(key in OMEGA_KEYS and finite_number(w) and w > 0 for key, w in value.items())
    return None if ok and value else f"a non-empty mapping from keys among {', '.join(OMEGA_KEYS)} to finite " \
        "weights > 0"


FIELDS: dict[str, Field] = {
    "framework": Field(str, None, "SSL framework", choice(FRAMEWORKS)),
    "variant": Field(str, "vanilla", "vanilla, augself (auxiliary omega prediction) or cassle (conditioned "
                     "projector)", choice(VARIANTS)),
    "backbone": Field(str, None, "feature extractor", choice(BACKBONES)),
    "cifar_stem": Field(bool, None, "3x3 stride-1 first conv without max-pool (default: on for images <= 64 px)"),
    "zero_init_residual": Field(bool, False, "ResNets: start the last BatchNorm weight of every residual block at 0 "
                                "(the authors' ResNet-50 does)"),
    "backbone_init": Field(str, "torchvision", "ResNets: torchvision's init (kaiming-normal convs) or the authors' "
                           "(PyTorch's default for every conv and linear layer)", choice(BACKBONE_INITS)),
    "dataset": Field(str, "synthetic", "pretraining dataset (registry name)", pretrain_dataset),
    "data_root": Field((str, type(None)), None, "local folder of the dataset (not needed for synthetic)"),
    "image_size": Field((int, type(None)), None, "view size in pixels (default: the dataset's)", positive),
    "epochs": Field((int, type(None)), None, "training epochs (default: the framework's)", positive),
    "max_steps": Field((int, type(None)), None, "stop after this many optimiser steps (overrides epochs)", positive),
    "batch_size": Field((int, type(None)), None, "global batch size over all processes", positive),
    "seed": Field(int, 0, "seed of data order, augmentation and initialisation", seed_range),
    "optimizer": Field((str, type(None)), None, "sgd, lars or adamw", choice(OPTIMIZERS)),
    "base_lr": Field((float, type(None)), None, "learning rate at batch 256 (scaled linearly)", positive),
    "weight_decay": Field((float, type(None)), None, "weight decay", non_negative),
    "momentum": Field(float, 0.9, "SGD/LARS momentum", probability),
    "lars.trust_coefficient": Field(float, 0.001, "LARS trust coefficient (BYOL, Barlow Twins: 0.001; solo-learn's "
                                    "CIFAR recipes: 0.02)", positive),
    "lars.clip": Field(bool, False, "LARS: never raise a layer's lr above the scheduled one (solo-learn's clip_lr)"),
    "warmup_epochs": Field((float, type(None)), None, "linear warm-up length in epochs", non_negative),
    "warmup_start_factor": Field(float, 0.0, "lr at the warm-up's first step, as a fraction of the "
                                 "peak lr (default: the framework's; Barlow Twins 0.1, as the authors)", probability),
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
    "augment.crop_scale": Field(list, [0.2, 1.0], "RandomResizedCrop area range", interval(0, 1)),
    "augment.crop_ratio": Field(list, [3 / 4, 4 / 3], "RandomResizedCrop aspect-ratio range", interval(0)),
    "augment.flip_p": Field(float, 0.5, "horizontal flip probability", probability),
    "augment.jitter_p": Field(float, 0.8, "colour jitter probability", probability),
    "augment.jitter": Field(list, [0.4, 0.4, 0.4, 0.1], "brightness, contrast, saturation, hue strengths",
                            jitter_strengths),
    "augment.gray_p": Field(float, 0.2, "grayscale probability", probability),
    "augment.blur_p": Field(float, 0.5, "Gaussian blur probability", probability),
    "augment.blur_sigma": Field(list, [0.1, 2.0], "blur sigma range", interval(0)),
    "checkpoint_every": Field(int, 500, "steps between resumable checkpoints", positive),
    "log_every": Field(int, 10, "steps between history rows", positive),
    "num_workers": Field(int, 4, "data-loading worker processes", non_negative),
    "device": Field(str, "auto", "auto (cuda when available), cpu or cuda[:N]", device_name),
    "precision": Field(str, "auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", choice(PRECISIONS)),
    "channels_last": Field((bool, type(None)), None, "channels_last memory format (default: on CUDA)"),
    "compile": Field(bool, False, "torch.compile the backbone"),
}


def shown(value: Any) -> str:
    """`repr(value)` cut short (long lists, strings, numbers and self-referencing YAML aliases stay readable)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother, short.maxlong = 3, 8, 8, 80, 80, 40
    return short.repr(value)


def suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_value(key: str, value: Any) -> Any:
    """Validate one key's value, converting ints to floats where a float is expected; raise ConfigError if bad."""
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {shown(key)} = {shown(value)}{suggestion(key)}; allowed keys: "
                          f"{', '.join(FIELDS)}")
    field = FIELDS[key]
    kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"config key {key!r} = {shown(value)} is too large for a float; expected a finite "
                              "number") from None
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise ConfigError(f"config key {key!r} = {shown(value)} has type {type(value).__name__}; expected {names}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} = {shown(value)} is not a finite number")
    if value is not None and field.check is not None:
        try:
            allowed = field.check(value)
        except TypeError:
            allowed = field.help
        if allowed is not None:
            raise ConfigError(f"config key {key!r} = {shown(value)} is not allowed; expected {allowed}")
    return value


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, except for keys whose value is itself a mapping (augself.weights).

    Sections nest at most two levels deep (no key has more dots), so deeper mappings, and YAML aliases that refer to
    themselves, are left whole under an unknown key instead of being followed.
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {shown(key)} is not a string; keys are names such as 'epochs'")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in FIELDS and name.count(".") < 2:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)`; whatever YAML cannot read (syntax, impossible dates such as 2001-13-45, integers
    of thousands of digits, absurd nesting) raises one ConfigError naming `where`."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        reason = str(error).replace("\n", " ")
        raise ConfigError(f"{where} is not valid YAML: {reason}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (so `epochs=5`, `omega_keys=[crop,color]`, `data_root=null`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. --set epochs=10)")
    value = parse_yaml(raw, f"the value of override {text!r}") if raw.strip() else None
    return key.strip(), value


def read_config_file(path: Path) -> dict[str, Any]:
    """The flat mapping a YAML config file holds; a missing, unreadable or malformed file raises ConfigError."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {error}") from None
    loaded = parse_yaml(text, f"config file {path}")
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(loaded).__name__}")
    return flatten(loaded or {})


def load_config(path: Path | str | None = None, overrides: Iterable[str] = (),
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config (or start from `base`), apply `key=value` overrides, validate, fill defaults."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        raw.update(read_config_file(Path(path)))
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
    defaults.setdefault("image_size", get_dataset(config.get("dataset", FIELDS["dataset"].default)).image_size)
    for key, field in FIELDS.items():
        if config.get(key) is None:
            config[key] = defaults.get(key, field.default)
    if config["cifar_stem"] is None:
        config["cifar_stem"] = config["image_size"] <= 64 and config["backbone"] != "vit_small"
    check_combinations(config)
    return dict(sorted(config.items()))


def check_combinations(config: Mapping[str, Any]) -> None:
    """Constraints between keys: what would otherwise fail when the model is built, after the job started.

    Keys that the run's framework or variant does not read (conditioning.* on a vanilla run, queue_size on SimCLR)
    are accepted and ignored: workflow groups, test and benchmark configs share keys across a grid.
    """
    if config["epochs"] is None and config["max_steps"] is None:
        raise ConfigError("set 'epochs' or 'max_steps'")
    if config["backbone"] == "vit_small":
        if config["image_size"] % 16:
            raise ConfigError(f"config key 'image_size' = {config['image_size']!r} is not allowed with backbone "
                              "vit_small; expected a multiple of its patch size 16")
        if config["cifar_stem"]:
            raise ConfigError("config key 'cifar_stem' = True is not allowed with backbone vit_small (it has no "
                              "ResNet stem); expected false or null")
        if config["zero_init_residual"]:
            raise ConfigError("config key 'zero_init_residual' = True is not allowed with backbone vit_small (it has "
                              "no residual BatchNorm); expected false")
        if config["backbone_init"] != "torchvision":
            raise ConfigError(f"config key 'backbone_init' = {config['backbone_init']!r} is not allowed with backbone "
                              "vit_small (the authors' init is that of their ResNets); expected 'torchvision'")
    if config["variant"] == "cassle":
        check_conditioning(config)


def check_conditioning(config: Mapping[str, Any]) -> None:
    """The CASSLE variant's conditioning keys, with each other and with the framework: the rules of
    cassle.nets.ConditioningConfig and of the framework (Framework.conditioning_config), named by config key."""
    try:
        FRAMEWORKS[config["framework"]].conditioning_config(config)
    except ConditioningError as error:
        key = f"conditioning.{error.field}"
        raise ConfigError(f"config key {key!r} = {shown(config.get(key))} is not allowed: {error}") from None


def experiment_hash(config: Mapping[str, Any]) -> str:
    """The config hash of what a run computes (RUNTIME_KEYS left out): names run folders and guards resumes."""
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
