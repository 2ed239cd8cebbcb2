"""CIFAR-10/100 from either torchvision's pickled batches or JPEG class folders, with the same splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cassle.data.folder_sets import FolderSource
from cassle.data.layout import Transform
from cassle.data.torchvision_sets import TorchvisionSource

if TYPE_CHECKING:  # torch is imported where a split is loaded: the workflow plan checks roots without it
    from torch.utils.data import Dataset

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class CifarSource:
    """Reads `root/<pickled_dir>/` through torchvision when that folder exists, else `root/{train,test}/<class>/`.

    Both layouts give the same class order and split sizes; the val images differ between layouts because the
    seeded permutation indexes the pickled order in one and the sorted file names in the other."""

    pickled_dir: str
    pickled: TorchvisionSource
    folders: FolderSource

    def _pick(self, root: Path) -> TorchvisionSource | FolderSource:
        return self.pickled if (root / self.pickled_dir).exists() else self.folders

    def load(
        self, root: Path, split: str, transform: Transform | None = None, *, skip_corrupt: bool | None = None
    ) -> Dataset:
        """`skip_corrupt` applies to the JPEG layout (the pickled arrays cannot hold unreadable files)."""
        if self._pick(root) is self.pickled:
            return self.pickled.load(root, split, transform)
        return self.folders.load(root, split, transform, skip_corrupt=skip_corrupt)

    def probe(self, root: Path) -> dict[str, int]:
        return self._pick(root).probe(root)
