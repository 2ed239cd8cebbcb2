"""cassle: augmentation-aware self-supervised learning (CASSLE, AugSelf and vanilla SSL)."""

__version__ = "0.1.0"
