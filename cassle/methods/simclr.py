"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views, negatives from the whole batch."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cassle.losses import nt_xent
from cassle.methods.base import Method, SSLOutput


class SimCLR(Method):
    """compat=original takes negatives from the global batch over all processes; compat=authors from the local
    batch of each process only, as the CASSLE authors' code does."""

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y1, y2 = self.embed(views[0]), self.embed(views[1])
        z1, z2 = self.project(y1, omegas[0]), self.project(y2, omegas[1])
        loss = nt_xent(z1, z2, self.config["temperature"], global_negatives=self.config["compat"] != "authors")
        return SSLOutput(loss, (y1, y2))
