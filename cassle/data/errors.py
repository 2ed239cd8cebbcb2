"""Exceptions raised by the dataset registry and loaders."""

from __future__ import annotations

from pathlib import Path


class LayoutError(ValueError):
    """A data root does not match the expected layout; `DatasetSpec.load` turns it into `DatasetNotFoundError`."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's root is missing or malformed. The message says what to fix and where to set the root."""

    def __init__(self, dataset: str, root: Path | str | None, layout: str, problem: str) -> None:
        self.dataset, self.root, self.layout, self.problem = dataset, root, layout, problem
        tried = "no root was given" if root is None else f"tried root {root}"
        super().__init__(
            f"dataset '{dataset}': {problem} ({tried}).\n"
            f"Expected layout under the root:\n{layout}\n"
            f"Set the root with `data_roots.{dataset}: /path` in the workflow config (config/config.yaml), "
            f"or `--set data_root=/path` for `cassle pretrain`, `--data-root /path` for `cassle eval`."
        )


class CorruptImageError(OSError):
    """An image file cannot be read or decoded."""

    def __init__(self, path: Path | str, reason: BaseException | str) -> None:
        self.path = path
        super().__init__(
            f"cannot read image {path}: {reason}. Replace or delete the file, or load the dataset with "
            f"skip_corrupt=True to report and skip unreadable images."
        )
