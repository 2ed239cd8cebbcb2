"""The frameworks, one module each, in a registry by name. Adding a framework = one module + one line here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cassle.methods.barlow import BarlowTwins
from cassle.methods.base import AugSelfLoss, Method, SSLOutput
from cassle.methods.byol import BYOL
from cassle.methods.mocov1 import MoCoV1
from cassle.methods.mocov2 import MoCoV2
from cassle.methods.mocov3 import MoCoV3
from cassle.methods.simclr import SimCLR
from cassle.methods.simsiam import SimSiam

METHODS: dict[str, type[Method]] = {
    method.name: method for method in (MoCoV2, SimCLR, BarlowTwins, MoCoV3, BYOL, SimSiam, MoCoV1)
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown framework {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def framework_defaults(name: str) -> dict[str, Any]:
    """The framework's config defaults (the paper's Table 5 and the reference notes)."""
    return dict(get_method(name).defaults)


def build_method(config: Mapping[str, Any]) -> Method:
    """The model for a resolved config (see cassle.config.load_config)."""
    return get_method(config["framework"])(config)


__all__ = ["METHODS", "AugSelfLoss", "Method", "SSLOutput", "build_method", "framework_defaults", "get_method"]
