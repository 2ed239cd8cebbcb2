"""Omega-recording augmentations: batched SSL views and the descriptor omega of how each view was made.

See docs/omega.md for the column layout and the pipeline's semantics.
"""

from __future__ import annotations

from cassle.augment.images import image_sizes
from cassle.augment.omega import (
    OMEGA_DIM,
    OMEGA_KEYS,
    OMEGA_LETTERS,
    OMEGA_SLICES,
    RELATIVE_BINARY_KEYS,
    omega_dim,
    relative_omega,
    select_omega,
)
from cassle.augment.params import ViewParams
from cassle.augment.sampler import ViewSampler

__all__ = [
    "OMEGA_DIM",
    "OMEGA_KEYS",
    "OMEGA_LETTERS",
    "OMEGA_SLICES",
    "RELATIVE_BINARY_KEYS",
    "ViewParams",
    "ViewSampler",
    "image_sizes",
    "omega_dim",
    "relative_omega",
    "select_omega",
]
