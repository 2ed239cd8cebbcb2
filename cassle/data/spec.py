"""`DatasetSpec`: what the registry knows about one dataset, and how to load its splits."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cassle.data.errors import DatasetNotFoundError, LayoutError
from cassle.data.layout import Transform
from cassle.data.roots import root_from_environment
from cassle.data.splits import SPLITS

if TYPE_CHECKING:  # torch is imported where a split is loaded: the workflow plan reads specs without it
    from torch.utils.data import Dataset

KINDS = ("pretrain", "downstream", "detection")
METRICS = ("top1", "class_avg", "r2", "ap")


class Source(Protocol):
    """Reads a dataset's splits from a root; keyword-only parameters of `load` are the dataset's options."""

    def load(self, root: Path | None, split: str, transform: Transform | None = None, **options: Any) -> Dataset: ...

    def probe(self, root: Path) -> dict[str, int]:
        """Check a root cheaply (no decoding); image counts per on-disk split where cheap to count."""
        ...


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One registered dataset.

    `num_classes` is the number of classes (for `r2` datasets: the target dimension; for `detection`: object
    classes without background; None where it is read from the data). `sizes` are the split sizes with the
    complete official data; `split_notes` says how the splits are made. `pretrain_split` is the split that
    pretraining reads; `checked`: looked for by `cassle data check`. `label` is the short column header of the
    paper's tables; `image_size` the view size pretraining on it uses by default (config key `image_size`).
    """

    name: str
    title: str
    num_classes: int | None
    layout: str
    sizes: Mapping[str, int]
    split_notes: str
    source: Source = field(repr=False)
    kinds: frozenset[str] = frozenset({"downstream"})
    metric: str = "top1"
    splits: tuple[str, ...] = SPLITS
    pretrain_split: str | None = None
    needs_root: bool = True
    checked: bool = True
    label: str = ""
    image_size: int = 224

    @property
    def short(self) -> str:
        """The table header: `label`, else the name."""
        return self.label or self.name

    def __post_init__(self) -> None:
        assert self.kinds <= set(KINDS) and self.metric in METRICS, self
        assert (self.pretrain_split is not None) == ("pretrain" in self.kinds), self

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the extra keyword options `load` accepts for this dataset."""
        parameters = inspect.signature(self.source.load).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def load(
        self, root: Path | str | None, split: str, transform: Transform | None = None, **options: Any
    ) -> Dataset:
        """Split `split` as a Dataset of (image, target): RGB PIL images, or `transform(image)` when given."""
        if split not in self.splits:
            raise ValueError(f"dataset '{self.name}' has no split {split!r}; choose one of {', '.join(self.splits)}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ValueError(f"dataset '{self.name}' does not take option(s) {', '.join(unknown)}; it takes: {allowed}")
        path = self.resolve_root(root)
        with self._layout_errors(path):
            return self.source.load(path, split, transform, **options)

    def check_root(self, root: Path | str | None) -> dict[str, int]:
        """Check `root` against the layout without decoding images; image counts per on-disk split where cheap."""
        path = self.resolve_root(root)
        if path is None:
            return {}
        with self._layout_errors(path):
            return self.source.probe(path)

    def resolve_root(self, root: Path | str | None) -> Path | None:
        """The root as a Path (None for datasets that need none); a missing root raises DatasetNotFoundError."""
        if not self.needs_root:
            return None
        if root is None or str(root) == "":
            root = root_from_environment(self.name)
        if root is None:
            raise DatasetNotFoundError(self.name, None, self.layout, "no data root was given")
        path = Path(root).expanduser()
        if not path.is_dir():
            problem = "the root is not a folder" if path.exists() else "the root folder does not exist"
            raise DatasetNotFoundError(self.name, path, self.layout, problem)
        return path

    @contextmanager
    def _layout_errors(self, root: Path) -> Iterator[None]:
        try:
            yield
        except LayoutError as error:
            raise DatasetNotFoundError(self.name, root, self.layout, str(error)) from None
        except FileNotFoundError as error:
            if isinstance(error, DatasetNotFoundError):
                raise
            raise DatasetNotFoundError(self.name, root, self.layout, f"missing {error.filename}") from None
