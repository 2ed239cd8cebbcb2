"""SimSiam (Chen & He 2021): predict the stop-gradient projection of the other view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from cassle.core.schedules import FIXED_LR
from cassle.losses import negative_cosine
from cassle.methods.base import Method, SSLOutput


class SimSiam(Method):
    """Symmetric negative cosine; the predictor keeps a constant learning rate, as published."""

    def optimizer_groups(self) -> list[dict[str, Any]]:
        params = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        decay = self.config["weight_decay"]
        return [
            {"name": "all", "params": [p for n, p in params if not n.startswith("predictor.")],
             "weight_decay": decay},
            {"name": "predictor", "params": [p for n, p in params if n.startswith("predictor.")],
             "weight_decay": decay, FIXED_LR: True},
        ]

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y = [self.embed(view) for view in views]
        z = [self.project(y_i, omega) for y_i, omega in zip(y, omegas)]
        p = [self.predictor(z_i) for z_i in z]
        loss = 0.5 * (negative_cosine(p[0], z[1]) + negative_cosine(p[1], z[0]))
        return SSLOutput(loss, (y[0], y[1]))
