"""Datasets: a registry by name (layouts, splits, metrics), a synthetic dataset, raw images for pretraining."""

from __future__ import annotations

from cassle.core.lazy import lazy_namespace

__all__, __getattr__, __dir__ = lazy_namespace(__name__, {
    "check": ["CheckResult", "check_roots", "format_check_table"],
    "describe": ["dataset_digest", "describe_dataset"],
    "errors": ["CorruptImageError", "DatasetNotFoundError"],
    "pretrain": ["ToUint8Tensor", "collate_images", "load_pretrain"],
    "registry": ["DATASETS", "get_dataset", "list_datasets"],
    "spec": ["KINDS", "METRICS", "DatasetSpec"],
    "synthetic": ["SyntheticShapes"],
})
