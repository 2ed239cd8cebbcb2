"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' projections made the identity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from cassle.core.optim import BIAS_AND_NORM, param_groups
from cassle.losses import barlow_twins
from cassle.methods.base import Method, SSLOutput


class BarlowTwins(Method):
    """The projector ends in an affine-free BatchNorm (synchronised across processes), so the loss needs no
    further standardisation. Defaults are the paper's Table 5: SGD with biases and norms at lr x 0.024 (the ratio of
    Barlow Twins' two LARS learning rates) and 10 warm-up epochs from lr/10 (the authors' LinearLR start);
    `optimizer=lars` gives the original optimiser."""

    def optimizer_groups(self) -> list[dict[str, Any]]:
        lars = self.config["optimizer"] == "lars"
        return param_groups(self, self.config["weight_decay"], exclude_bias_and_norm=lars,
                            lr_multipliers={BIAS_AND_NORM: 0.024})

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y1, y2 = self.embed(views[0]), self.embed(views[1])
        z1, z2 = self.project(y1, omegas[0]), self.project(y2, omegas[1])
        return SSLOutput(barlow_twins(z1, z2, self.config["lambd"], normalize=False), (y1, y2))
