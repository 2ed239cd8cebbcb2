"""Omega-recording augmentations: batched SSL views and the descriptor omega of how each view was made.

See docs/omega.md for the column layout and the pipeline's semantics.
"""

from __future__ import annotations

from cassle.core.lazy import lazy_namespace

__all__, __getattr__, __dir__ = lazy_namespace(__name__, {
    "images": ["image_sizes"],
    "layout": ["OMEGA_DIM", "OMEGA_KEYS", "OMEGA_LETTERS", "OMEGA_SLICES", "RELATIVE_BINARY_KEYS", "omega_dim"],
    "omega": ["relative_omega", "select_omega"],
    "params": ["ViewParams"],
    "sampler": ["ViewSampler"],
})
