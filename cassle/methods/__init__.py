"""The frameworks: one module each (its loss), and their table by name (frameworks.py, without torch).

Adding a framework = one module + one `Framework` line in frameworks.py. Registration order is the order of the
paper's tables (the report lists frameworks in it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cassle.core.lazy import lazy_namespace
from cassle.methods.frameworks import FRAMEWORKS

if TYPE_CHECKING:
    from cassle.methods.base import Method
    from cassle.nets import MLPSpec

_LAZY, __getattr__, __dir__ = lazy_namespace(__name__, {
    "base": ["AugSelfLoss", "Method", "SSLOutput"],
    "frameworks": ["FRAMEWORKS", "VARIANTS", "Framework", "framework_defaults", "get_method"],
})
__all__ = [*_LAZY, "build_method"]


def build_method(config: Mapping[str, Any]) -> Method:
    """The model for a resolved config (see cassle.config.load_config)."""
    return FRAMEWORKS[config["framework"]].method()(config)


def _head(spec: MLPSpec | None) -> str:
    if spec is None:
        return "none"
    last_bn = "" if not spec.last_bn else ", last BN" + ("" if spec.last_bn_affine else " (affine-free)")
    return f"{spec.num_layers} layers, {spec.hidden_dim} -> {spec.out_dim}{last_bn}"


def reference_table() -> str:
    """The Markdown table of every registered framework (docs/frameworks.md embeds it; a test keeps them equal)."""
    lines = ["| framework | label | module: what it is | momentum encoder (EMA) | projector | predictor | defaults |",
             "|---|---|---|---|---|---|---|"]
    for name, framework in FRAMEWORKS.items():
        module = framework.method().__module__
        summary = (sys.modules[module].__doc__ or "").strip().splitlines()[0]
        d, heads = framework.defaults, framework.heads
        ema = "-" if not framework.momentum_encoder else f"{d['ema']}" if d["ema"] == d["ema_final"] \
            else f"{d['ema']} -> {d['ema_final']}"
        predictor = _head(heads.predictor) if heads is not None else "none"
        defaults = f"{d['backbone']}, {d['epochs']} epochs, batch {d['batch_size']}, {d['optimizer']} lr {d['base_lr']}"
        lines.append(f"| `{name}` | {framework.label} | `{module.removeprefix('cassle.')}`: {summary} | {ema} "
                     f"| {_head(heads.projector if heads else None)} | {predictor} | {defaults} |")
    return "\n".join(lines)
