"""The layout of the augmentation descriptor omega: its columns per key, their letters, subsets of keys.

Plain Python (no torch): the config and the workflow plan validate omega keys with it. See docs/omega.md.
"""

from __future__ import annotations

from collections.abc import Iterable

OMEGA_SLICES: dict[str, slice] = {
    "blur": slice(0, 1),
    "color": slice(1, 5),
    "color_diff": slice(5, 8),
    "crop": slice(8, 12),
    "flip": slice(12, 13),
    "grayscale": slice(13, 14),
}
"""Columns of omega per augmentation, in the authors' (alphabetical) order. See docs/omega.md."""

OMEGA_KEYS: tuple[str, ...] = tuple(OMEGA_SLICES)
OMEGA_DIM: int = 14

OMEGA_LETTERS: dict[str, str] = {"crop": "c", "color": "j", "blur": "b", "flip": "f", "grayscale": "g",
                                 "color_diff": "d"}
"""The paper's letter for each key (omega^{c,j,b,...} in Table 4), in the paper's order."""

RELATIVE_BINARY_KEYS: frozenset[str] = frozenset({"flip", "grayscale"})
"""Relative targets that are 0/1 ("same in both views"): classification (BCE); the others are regression."""


def canonical_keys(keys: str | Iterable[str]) -> tuple[str, ...]:
    """Validate a subset of omega keys and return it in canonical (column) order; a single name is allowed."""
    given = [keys] if isinstance(keys, str) else list(keys)
    unknown = [k for k in given if k not in OMEGA_SLICES]
    if unknown:
        raise ValueError(f"unknown omega key(s) {unknown!r}; allowed keys are {list(OMEGA_KEYS)}")
    duplicates = sorted({k for k in given if given.count(k) > 1})
    if duplicates:
        raise ValueError(f"omega key(s) {duplicates!r} given more than once in {given!r}; list each key once")
    return tuple(k for k in OMEGA_KEYS if k in given)


def omega_dim(keys: str | Iterable[str]) -> int:
    """Number of omega columns of a subset of keys."""
    return sum(OMEGA_SLICES[k].stop - OMEGA_SLICES[k].start for k in canonical_keys(keys))
