"""The dataset registry: look datasets up by name, list them by kind."""

from __future__ import annotations

from types import MappingProxyType

from cassle.data.catalog import CATALOG
from cassle.data.spec import KINDS, DatasetSpec

DATASETS: MappingProxyType[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in CATALOG})


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset `name`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {', '.join(DATASETS)}") from None


def list_datasets(kind: str | None = None) -> list[str]:
    """Names of the registered datasets, in registry order; only those of `kind` when given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)} (or None for all)")
    return [name for name, spec in DATASETS.items() if kind is None or kind in spec.kinds]
