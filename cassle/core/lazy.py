"""Lazy package namespaces: a package's public names imported from its submodules on first use (PEP 562).

The workflow's planning (Snakemake's DAG, `cassle launch`'s checks) reads names, defaults and rules, which live in
modules without torch; the package namespaces (`from cassle.nets import build_backbone`) must then not import every
submodule up front, or each Snakemake start would pay for torch and torchvision (seconds) to plan a DAG.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_namespace(package: str, exports: Mapping[str, Sequence[str]]
                   ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """`__all__`, `__getattr__` and `__dir__` of `package`, whose public names are those of `exports` (submodule ->
    names it defines): a name's submodule is imported when the name is first read, and the value kept in the package.
    Submodules themselves stay importable as attributes (`cassle.nets.backbones`)."""
    owner = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in owner:
            value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{package}.{name}":
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owner})

    return sorted(owner), __getattr__, __dir__
