"""The frameworks, one module each, in a registry by name. Adding a framework = one module + one line here.

Registration order is the order of the paper's tables (the report lists frameworks in it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from cassle.core.registry import Registry
from cassle.methods.barlow import BarlowTwins
from cassle.methods.base import VARIANTS, AugSelfLoss, Method, SSLOutput
from cassle.methods.byol import BYOL
from cassle.methods.mocov1 import MoCoV1
from cassle.methods.mocov2 import MoCoV2
from cassle.methods.mocov3 import MoCoV3
from cassle.methods.simclr import SimCLR
from cassle.methods.simsiam import SimSiam
from cassle.nets import MLPSpec

METHODS: Registry[type[Method]] = Registry("framework", [
    (method.name, method) for method in (SimCLR, MoCoV2, BarlowTwins, MoCoV3, BYOL, SimSiam, MoCoV1)
])


def get_method(name: str) -> type[Method]:
    """The framework registered as `name` (UnknownNameError, a ValueError, when there is none)."""
    return METHODS[name]


def framework_defaults(name: str) -> dict[str, Any]:
    """The framework's config defaults (the paper's Table 5 and the reference notes)."""
    return dict(get_method(name).defaults)


def build_method(config: Mapping[str, Any]) -> Method:
    """The model for a resolved config (see cassle.config.load_config)."""
    return get_method(config["framework"])(config)


def _head(spec: MLPSpec | None) -> str:
    if spec is None:
        return "none"
    last_bn = "" if not spec.last_bn else ", last BN" + ("" if spec.last_bn_affine else " (affine-free)")
    return f"{spec.num_layers} layers, {spec.hidden_dim} -> {spec.out_dim}{last_bn}"


def reference_table() -> str:
    """The Markdown table of every registered framework (docs/frameworks.md embeds it; a test keeps them equal)."""
    lines = ["| framework | label | module: what it is | momentum encoder (EMA) | projector | predictor | defaults |",
             "|---|---|---|---|---|---|---|"]
    for name, method in METHODS.items():
        module = sys.modules[method.__module__]
        summary = (module.__doc__ or "").strip().splitlines()[0]
        d = method.defaults
        ema = "-" if not method.momentum_encoder else f"{d['ema']}" if d["ema"] == d["ema_final"] \
            else f"{d['ema']} -> {d['ema_final']}"
        heads = method.heads
        predictor = _head(heads.predictor) if heads is not None else "none"
        defaults = f"{d['backbone']}, {d['epochs']} epochs, batch {d['batch_size']}, {d['optimizer']} lr {d['base_lr']}"
        lines.append(f"| `{name}` | {method.label} | `{method.__module__.removeprefix('cassle.')}`: {summary} | {ema} "
                     f"| {_head(heads.projector if heads else None)} | {predictor} | {defaults} |")
    return "\n".join(lines)


__all__ = ["METHODS", "VARIANTS", "AugSelfLoss", "Method", "SSLOutput", "build_method", "framework_defaults",
           "get_method"]
