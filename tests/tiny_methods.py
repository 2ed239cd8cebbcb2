"""Tiny configs and a fixed two-view batch of the synthetic dataset, shared by the framework tests."""

from __future__ import annotations

import torch

from cassle.augment import ViewSampler
from cassle.config import resolve
from cassle.data import collate_images, load_pretrain

TINY = {"backbone": "resnet_narrow", "dataset": "synthetic", "max_steps": 10, "batch_size": 16,
        "projector.hidden_dim": 64, "projector.out_dim": 32, "predictor.hidden_dim": 64, "queue_size": 64,
        "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16}


def tiny_config(framework: str, variant: str, **overrides) -> dict:
    return resolve({**TINY, "framework": framework, "variant": variant, **overrides})


def fixed_batch(n: int = 16, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Two augmented views of the first n synthetic images and their omegas."""
    images, _ = collate_images([load_pretrain("synthetic", None)[i] for i in range(n)])
    sampler, generator = ViewSampler(size=32), torch.Generator().manual_seed(seed)
    (v1, w1), (v2, w2) = (sampler(images, generator=generator) for _ in range(2))
    return (v1, v2), (w1, w2)
