"""BYOL (Grill et al. 2020): predict the momentum encoder's projection of the other view."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cassle.losses import byol_loss
from cassle.methods.base import Method, SSLOutput


class BYOL(Method):
    """Symmetric 2 - 2 cos loss; the momentum rate rises from 0.996 to 1 with a cosine; LARS as published."""

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y = [self.embed(view) for view in views]
        p = [self.predictor(self.project(y_i, omega)) for y_i, omega in zip(y, omegas)]
        with torch.no_grad():
            t = [self.project(self.embed(view, momentum=True), omega, momentum=True)
                 for view, omega in zip(views, omegas)]
        return SSLOutput(byol_loss(p[0], t[1]) + byol_loss(p[1], t[0]), (y[0], y[1]))
