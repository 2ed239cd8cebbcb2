"""Seeded, deterministic train/val carve-outs of official training pools.

torch (its seeded `randperm`) is imported where a carve is computed: the registry describes carves without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cassle.data.errors import LayoutError

SPLITS = ("train", "val", "trainval", "test")


def _permutation(n: int, seed: int) -> list[int]:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


@dataclass(frozen=True)
class RandomCarve:
    """Val carved out of a training pool by one seeded permutation, exactly like
    `torch.utils.data.random_split(pool, [n - n_val, n_val], generator=torch.Generator().manual_seed(seed))`:
    the first n - n_val permuted indices are train, the rest val.

    `val` is a number of images or a fraction of the pool (rounded); `pool`, when set, is the size the
    official training split must have (a partial copy of a dataset is an error, not a silently other split).
    """

    val: int | float
    seed: int
    pool: int | None = None

    def num_val(self, n: int) -> int:
        """Number of val images carved from a pool of `n`."""
        if self.pool is not None and n != self.pool:
            raise LayoutError(f"the official training split has {n} images, expected {self.pool} (incomplete copy?)")
        n_val = round(self.val * n) if isinstance(self.val, float) else self.val
        if not 0 < n_val < n:
            raise LayoutError(f"cannot carve {n_val} val images out of a training split of {n} images")
        return n_val

    def indices(self, n: int) -> tuple[list[int], list[int]]:
        """Sorted (train, val) indices into a pool of `n` items."""
        n_train = n - self.num_val(n)
        perm = _permutation(n, self.seed)
        return sorted(perm[:n_train]), sorted(perm[n_train:])


@dataclass(frozen=True)
class StratifiedCarve:
    """Per class: `val_per_class` val images, then `train_per_class` train images (all the others when None),
    the remaining images are left over (the test split of datasets without an official one).

    One generator seeded with `seed` permutes each class's images, classes in increasing label order.
    """

    val_per_class: int
    train_per_class: int | None
    seed: int

    def indices(self, targets: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """Sorted (train, val, rest) indices into a pool with these per-item class labels."""
        import torch

        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(targets):
            by_class.setdefault(int(label), []).append(index)
        need = self.val_per_class + (self.train_per_class or 1)
        generator = torch.Generator().manual_seed(self.seed)
        train: list[int] = []
        val: list[int] = []
        rest: list[int] = []
        for label in sorted(by_class):
            members = by_class[label]
            if len(members) < need:
                raise LayoutError(f"class {label} has {len(members)} images, the split needs at least {need}")
            order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
            end = None if self.train_per_class is None else self.val_per_class + self.train_per_class
            val += order[: self.val_per_class]
            train += order[self.val_per_class : end]
            rest += order[end:] if end is not None else []
        return sorted(train), sorted(val), sorted(rest)


def pool_indices(split: str, n: int, carve: RandomCarve) -> list[int]:
    """Indices into a training pool of `n` items for split `train`, `val` or `trainval` (the whole pool)."""
    if split == "trainval":
        return list(range(n))
    train, val = carve.indices(n)
    return {"train": train, "val": val}[split]


def stratified_indices(split: str, targets: Sequence[int], carve: StratifiedCarve) -> list[int]:
    """Indices for `train`, `val`, `trainval` (train + val) or `test` (the left-over images) of a stratified carve."""
    train, val, rest = carve.indices(targets)
    return {"train": train, "val": val, "trainval": sorted(train + val), "test": rest}[split]


@dataclass(frozen=True)
class ShuffledSplit:
    """Train, val and test taken in that order from one seeded permutation of a pool without official splits:
    the first round(train * n) permuted indices are train, the next round(val * n) val, the rest test."""

    train: float
    val: float
    seed: int

    def indices(self, split: str, n: int) -> list[int]:
        """Sorted indices of `split` (`train`, `val`, `trainval` or `test`) into a pool of `n` items."""
        n_train, n_val = round(self.train * n), round(self.val * n)
        if min(n_train, n_val, n - n_train - n_val) < 1:
            raise LayoutError(f"a pool of {n} images is too small for a {self.train}/{self.val}/rest split")
        perm = _permutation(n, self.seed)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "trainval": (0, n_train + n_val)}
        start, end = bounds.get(split, (n_train + n_val, n))
        return sorted(perm[start:end])
