"""Exceptions raised by the dataset registry and loaders."""

from __future__ import annotations

from pathlib import Path

SKIP_CORRUPT_VARIABLE = "CASSLE_SKIP_CORRUPT"


class LayoutError(ValueError):
    """A data root does not match the expected layout; `DatasetSpec.load` turns it into `DatasetNotFoundError`."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's root is missing or malformed. The message says what to fix and where to set the root."""

    def __init__(self, dataset: str, root: Path | str | None, layout: str, problem: str) -> None:
        self.dataset, self.root, self.layout, self.problem = dataset, root, layout, problem
        tried = "" if root is None else f" (tried root {root})"
        super().__init__(
            f"dataset '{dataset}': {problem}{tried}.\n"
            f"Expected layout under the root:\n{layout}\n"
            f"Set the root with `data_roots.{dataset}: /path` in the workflow config (config/config.yaml), "
            f"or `--set data_root=/path` for `cassle pretrain`, `--data-root /path` for `cassle eval`."
        )


class CorruptImageError(OSError, ValueError):
    """An image file cannot be read or decoded (also a ValueError: the CLI prints it without a traceback).

    `CorruptImageError(message)` with no reason rebuilds one from a complete message: that is how a DataLoader
    re-raises its worker's error in the main process (keeping the type and the file named in the message).
    """

    def __init__(self, path: Path | str, reason: BaseException | str | None = None) -> None:
        self.path = None if reason is None else path
        super().__init__(
            str(path) if reason is None else
            f"cannot read image {path}: {reason}. Replace or delete the file, or skip unreadable images of image-"
            f"folder datasets with {SKIP_CORRUPT_VARIABLE}=1 (skip_corrupt=True in code): they are then reported "
            "and left out."
        )
