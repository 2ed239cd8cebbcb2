"""Datasets: a registry by name (layouts, splits, metrics), a synthetic dataset, raw images for pretraining."""

from cassle.data.check import CheckResult, check_roots, format_check_table
from cassle.data.describe import dataset_digest, describe_dataset
from cassle.data.errors import CorruptImageError, DatasetNotFoundError
from cassle.data.pretrain import ToUint8Tensor, collate_images, load_pretrain
from cassle.data.registry import DATASETS, get_dataset, list_datasets
from cassle.data.spec import KINDS, METRICS, DatasetSpec
from cassle.data.synthetic import SyntheticShapes

__all__ = [
    "DATASETS",
    "KINDS",
    "METRICS",
    "CheckResult",
    "CorruptImageError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "SyntheticShapes",
    "ToUint8Tensor",
    "check_roots",
    "collate_images",
    "dataset_digest",
    "describe_dataset",
    "format_check_table",
    "get_dataset",
    "list_datasets",
    "load_pretrain",
]
