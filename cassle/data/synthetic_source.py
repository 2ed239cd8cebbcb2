"""The registry's loader of the synthetic shapes dataset (synthetic.py), and the dataset's default sizes.

The images (numpy, torch, PIL) are imported where a split is loaded: the workflow plan reads the registry without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cassle.data.synthetic import SyntheticShapes

DEFAULT_SIZE = 32
DEFAULT_LENGTHS = {"train": 2048, "val": 512, "test": 1024}


@dataclass(frozen=True)
class SyntheticSource:
    """Registry loader of the shapes dataset with one label set; registry items are PIL images by default."""

    target: str = "joint"

    def load(
        self,
        root: object,
        split: str,
        transform: Callable[[Any], Any] | None = None,
        *,
        size: int = DEFAULT_SIZE,
        seed: int = 0,
        lengths: Mapping[str, int] | None = None,
        as_pil: bool = True,
    ) -> SyntheticShapes:
        from cassle.data.synthetic import SyntheticShapes

        return SyntheticShapes(
            split, size=size, target=self.target, seed=seed, lengths=lengths, as_pil=as_pil, transform=transform
        )

    def probe(self, root: object) -> dict[str, int]:
        """Nothing to check: the images need no files."""
        return {}
