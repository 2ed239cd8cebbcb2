"""LARS, the layer-wise adaptive optimiser of BYOL and Barlow Twins (`build_optimizer("lars", ...)` builds it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from cassle.core.optim import LARS_ADAPTATION


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) as used by BYOL and Barlow Twins.

    Per parameter ``p`` with gradient ``g``::

        d = g + weight_decay * p
        if lars_adaptation and ||p|| > 0 and ||d|| > 0:
            ratio = trust_coefficient * ||p|| / ||d||
            if clip: ratio = min(ratio / lr, 1)     # the layer's lr is min(trust * ||p|| / ||d||, lr)
            d = d * ratio
        buf = momentum * buf + d ;  p = p - lr * buf

    Exclude biases and norm parameters from both weight decay and adaptation by giving their group
    ``weight_decay=0`` and ``lars_adaptation=False`` (``param_groups`` does this). ``clip`` is solo-learn's
    ``clip_lr`` (its CIFAR recipes use it with trust_coefficient 0.02): LARS then never raises a layer's lr above
    the scheduled one.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        clip: bool = False,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("trust_coefficient", trust_coefficient)):
            if value < 0:
                raise ValueError(f"LARS: {name}={value}; it must be >= 0")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "clip": clip, LARS_ADAPTATION: True}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; no host-device synchronisation."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad.add(param, alpha=group["weight_decay"])
                if group[LARS_ADAPTATION]:
                    ratio = self._trust_ratio(param, update, group["trust_coefficient"])
                    if group["clip"] and group["lr"] > 0:
                        ratio = ratio.div(group["lr"]).clamp_(max=1.0)
                    update.mul_(ratio)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                param.add_(buf, alpha=-group["lr"])
        return loss

    @staticmethod
    def _trust_ratio(param: torch.Tensor, update: torch.Tensor, eta: float) -> torch.Tensor:
        """``eta * ||p|| / ||d||``, or 1 when either norm is zero."""
        p_norm = torch.linalg.vector_norm(param)
        d_norm = torch.linalg.vector_norm(update)
        ratio = eta * p_norm / torch.where(d_norm > 0, d_norm, torch.ones_like(d_norm))
        return torch.where((p_norm > 0) & (d_norm > 0), ratio, torch.ones_like(ratio))
