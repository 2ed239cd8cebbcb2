"""MoCo-v2 (Chen et al. 2020): a query encoder, a momentum key encoder and a queue of negative keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from cassle.core.distributed import all_gather_no_grad
from cassle.losses import infonce
from cassle.methods.base import Method, SSLOutput


class MoCoV2(Method):
    """Asymmetric InfoNCE of view-1 queries against view-2 keys and the queue, as published.

    compat=original enqueues the keys (MoCo); compat=authors enqueues the queries and puts BN in the projector's
    hidden layer, as the CASSLE authors' code does (their MoCo numbers come from it).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        dim = self.queue_dim()
        self.register_buffer("queue", F.normalize(torch.randn(config["queue_size"], dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def projector_options(self) -> dict[str, Any]:
        return {"hidden_bn": self.config["compat"] == "authors"}

    def queue_dim(self) -> int:
        return self.head_specs().projector.out_dim

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Replace the oldest entries of the queue by the keys of the whole (global) batch."""
        keys = all_gather_no_grad(keys)
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[0]
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue.shape[0])

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        y1 = self.embed(views[0])
        q = self.project(y1, omegas[0])
        with torch.no_grad():
            y2 = self.embed(views[1], momentum=True)
            k = F.normalize(self.project(y2, omegas[1], momentum=True), dim=1)
        loss = infonce(q, k, self.queue.clone(), self.config["temperature"])
        self.enqueue(F.normalize(q.detach(), dim=1) if self.config["compat"] == "authors" else k)
        return SSLOutput(loss, (y1, y2))
