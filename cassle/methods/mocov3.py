"""MoCo-v3 (Chen et al. 2021): symmetric in-batch contrast of predicted queries against momentum keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cassle.losses import contrastive_in_batch
from cassle.methods.base import Method, SSLOutput


class MoCoV3(Method):
    """The momentum rate rises from 0.99 to 1 with a cosine, as published; compat=authors keeps it at 0.999."""

    def momentum(self, step: int, total_steps: int) -> float:
        return 0.999 if self.config["compat"] == "authors" else super().momentum(step, total_steps)

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y = [self.embed(view) for view in views]
        q = [self.predictor(self.project(y_i, omega)) for y_i, omega in zip(y, omegas)]
        with torch.no_grad():
            k = [self.project(self.embed(view, momentum=True), omega, momentum=True)
                 for view, omega in zip(views, omegas)]
        t = self.config["temperature"]
        loss = contrastive_in_batch(q[0], k[1], t) + contrastive_in_batch(q[1], k[0], t)
        return SSLOutput(loss, (y[0], y[1]))
