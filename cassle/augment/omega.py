"""The augmentation descriptor omega as tensors: column subsets and relative (AugSelf) targets (layout: layout.py)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from cassle.augment.layout import OMEGA_DIM, OMEGA_SLICES, RELATIVE_BINARY_KEYS, canonical_keys


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
