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


def overview_table() -> str:
    """The Markdown table of every registered dataset (docs/datasets.md embeds it; a test keeps them equal)."""
    columns = ("train", "val", "trainval", "test")
    header = "| name | label | kinds | classes | metric | view size | " + " | ".join(columns) + " | pretraining reads |"
    lines = [header,
             "|---|---|---|---|---|---|" + "---|" * len(columns) + "---|"]
    for name, spec in DATASETS.items():
        unit = {"r2": " outputs", "ap": " objects"}.get(spec.metric, "")
        classes = "from the data" if spec.num_classes is None else f"{spec.num_classes}{unit}"
        sizes = [str(spec.sizes[split]) if split in spec.sizes else ("from the data" if not spec.sizes else "–")
                 for split in columns]
        reads = spec.pretrain_split or ""
        if reads and reads not in columns and reads in spec.sizes:
            reads += f" ({spec.sizes[reads]})"
        kinds = ", ".join(kind for kind in KINDS if kind in spec.kinds)
        lines.append(f"| `{name}` | {spec.short} | {kinds} | {classes} | {spec.metric} | {spec.image_size} | "
                     + " | ".join(sizes) + f" | {reads} |")
    return "\n".join(lines)
