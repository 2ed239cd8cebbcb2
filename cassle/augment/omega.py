"""The augmentation descriptor omega: column layout, subsets, and relative (AugSelf) targets."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

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


def _check_omega(omega: Tensor, name: str = "omega") -> None:
    if not isinstance(omega, Tensor) or omega.ndim < 1 or omega.shape[-1] != OMEGA_DIM:
        shape = tuple(omega.shape) if isinstance(omega, Tensor) else type(omega).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {OMEGA_DIM}), got {shape}")


def select_omega(omega: Tensor, keys: str | Iterable[str]) -> Tensor:
    """Columns of ``omega`` (``... x 14``) for a subset of keys, concatenated in canonical order."""
    _check_omega(omega)
    chosen = canonical_keys(keys)
    return torch.cat([omega[..., OMEGA_SLICES[k]] for k in chosen], dim=-1) if chosen else omega[..., :0]


def unmirrored_crop(omega: Tensor) -> Tensor:
    """Crop columns ``[cy, cx, h, w]`` with the centre in source coordinates (the flip's mirroring undone)."""
    crop = omega[..., OMEGA_SLICES["crop"]].clone()
    flipped = omega[..., OMEGA_SLICES["flip"]].squeeze(-1) > 0.5
    crop[..., 1] = torch.where(flipped, 1.0 - crop[..., 1], crop[..., 1])
    return crop


def _relative_crop(omega1: Tensor, omega2: Tensor) -> Tensor:
    """``[dcy, dcx, dh, dw]``: centre offset of crop 1 from crop 2 in view 1's frame, and size differences."""
    diff = unmirrored_crop(omega1) - unmirrored_crop(omega2)
    flipped1 = omega1[..., OMEGA_SLICES["flip"]].squeeze(-1) > 0.5
    diff[..., 1] = torch.where(flipped1, -diff[..., 1], diff[..., 1])
    return diff


def relative_omega(omega1: Tensor, omega2: Tensor, keys: str | Iterable[str] = ("crop", "color")) -> dict[str, Tensor]:
    """AugSelf's targets: per key, the relative parameters between two views of the same images.

    crop: ``[dcy, dcx, dh, dw]`` (see ``_relative_crop``); flip, grayscale: 1.0 where both views agree;
    other keys: column-wise ``omega1 - omega2``. Returns ``{key: N x omega_dim(key)}`` in canonical order.
    """
    _check_omega(omega1, "omega1")
    _check_omega(omega2, "omega2")
    if omega1.shape != omega2.shape:
        raise ValueError(f"omega1 and omega2 must have the same shape, got {tuple(omega1.shape)} and "
                         f"{tuple(omega2.shape)}")
    out: dict[str, Tensor] = {}
    for key in canonical_keys(keys):
        a, b = omega1[..., OMEGA_SLICES[key]], omega2[..., OMEGA_SLICES[key]]
        if key == "crop":
            out[key] = _relative_crop(omega1, omega2)
        elif key in RELATIVE_BINARY_KEYS:
            out[key] = (a == b).to(omega1.dtype)
        else:
            out[key] = a - b
    return out
