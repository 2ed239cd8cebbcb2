"""The frameworks, one module each, in a registry by name. Adding a framework = one module + one line here.

Registration order is the order of the paper's tables (the report lists frameworks in it).
"""

from __future__ import annotations

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


__all__ = ["METHODS", "VARIANTS", "AugSelfLoss", "Method", "SSLOutput", "build_method", "framework_defaults",
           "get_method"]
