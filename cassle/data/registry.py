"""The dataset registry: look datasets up by name, list them by kind."""

from __future__ import annotations

from cassle.core.registry import Registry
from cassle.data.catalog import CATALOG
from cassle.data.spec import KINDS, DatasetSpec

DATASETS: Registry[DatasetSpec] = Registry("dataset", [(spec.name, spec) for spec in CATALOG])


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset `name` (UnknownNameError, a ValueError, when there is none)."""
    return DATASETS[name]


def list_datasets(kind: str | None = None) -> list[str]:
    """Names of the registered datasets, in registry order; only those of `kind` when given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)} (or None for all)")
    return [name for name, spec in DATASETS.items() if kind is None or kind in spec.kinds]
