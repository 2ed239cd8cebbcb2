"""The small base class every framework builds on: backbone, (conditioned) projector, predictor, momentum copies,
and the variant hooks (CASSLE conditions the projector on omega, AugSelf adds omega-prediction heads).

A framework module subclasses `Method` and implements `ssl_loss(views, omegas) -> SSLOutput`; its name, label, heads
and defaults are its line in frameworks.py. Everything that varies with the variant lives here, so a variant never
forks a framework.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cassle.augment import RELATIVE_BINARY_KEYS, omega_dim, relative_omega, select_omega
from cassle.core.optim import param_groups
from cassle.core.schedules import ema_momentum
from cassle.methods.frameworks import FRAMEWORKS
from cassle.nets import AugSelfHead, HeadSpecs, Normalize, build_backbone, build_projector, input_statistics


@dataclass
class SSLOutput:
    """What a framework's SSL step returns: its loss and the backbone features of both views (for AugSelf)."""

    loss: Tensor
    features: tuple[Tensor, Tensor]


class AugSelfLoss(nn.Module):
    """AugSelf: one head per omega key predicts the relative parameters of the two views from backbone features.

    Regression keys use mse(tanh(prediction), target) as AugSelf does; flip and grayscale (same / different) use
    binary cross-entropy. Both orders of the pair are used (symmetric) in one pass over the 2N rows
    [(y1, y2); (y2, y1)], so the heads' BatchNorm sees all of them at once, as in the authors' code.
    """

    def __init__(self, feat_dim: int, weights: Mapping[str, float]) -> None:
        super().__init__()
        self.weights = dict(sorted(weights.items()))
        self.heads = nn.ModuleDict({key: AugSelfHead(feat_dim, omega_dim([key])) for key in self.weights})

    def forward(self, y1: Tensor, y2: Tensor, omega1: Tensor, omega2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted total, {"augself/<key>": loss}) for features y1, y2 of views described by omega1, omega2."""
        forward, backward = relative_omega(omega1, omega2, self.weights), relative_omega(omega2, omega1, self.weights)
        losses = {}
        first, second = torch.cat([y1, y2]), torch.cat([y2, y1])
        for key, head in self.heads.items():
            prediction = head(first, second).float()
            target = torch.cat([forward[key], backward[key]]).float()
            if key in RELATIVE_BINARY_KEYS:
                losses[key] = F.binary_cross_entropy_with_logits(prediction, target)
            else:
                losses[key] = F.mse_loss(torch.tanh(prediction), target)
        total = sum(self.weights[key] * loss for key, loss in losses.items())
        return total, {f"augself/{key}": loss for key, loss in losses.items()}


class Method(nn.Module):
    """Backbone + projector (+ predictor) (+ momentum copies) trained with one SSL objective.

    A subclass implements `ssl_loss`; `self.framework` (its line in frameworks.py, chosen by config key `framework`)
    gives its heads (the paper's Table 5), defaults and whether it keeps momentum copies. forward(views, omegas,
    step, total_steps) returns a dict of losses whose "loss" entry is the total to minimise.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.framework = FRAMEWORKS[config["framework"]]
        self.normalize = Normalize(*input_statistics(config["dataset"]))
        self.backbone = build_backbone(config["backbone"], config["cifar_stem"], image_size=config["image_size"],
                                       zero_init_residual=config["zero_init_residual"],
                                       authors_init=config["backbone_init"] == "authors")
        self.conditioning = self.framework.conditioning_config(config)
        self.omega_keys = self.conditioning.omega_keys if self.conditioning else ()
        specs = self.head_specs()
        self.projector = self.build_projector(specs, self.backbone.num_features)
        self.predictor = specs.build_predictor() if specs else None
        self.augself = AugSelfLoss(self.backbone.num_features, config["augself.weights"]) \
            if config["variant"] == "augself" else None
        if self.framework.momentum_encoder:
            self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
            self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def head_specs(self) -> HeadSpecs | None:
        """Projector/predictor shapes: the framework's (paper Table 5) with the config's size overrides."""
        heads = self.framework.heads
        if heads is None:
            return None
        sizes = {field: self.config[f"projector.{field}"] for field in ("num_layers", "hidden_dim", "out_dim")
                 if self.config[f"projector.{field}"] is not None}
        specs = heads.with_projector(**self.projector_options(), **sizes)
        if specs.predictor is not None and self.config["predictor.hidden_dim"] is not None:
            specs = dataclasses.replace(specs, predictor=dataclasses.replace(
                specs.predictor, hidden_dim=self.config["predictor.hidden_dim"], out_dim=specs.projector.out_dim))
        return specs

    def projector_options(self) -> dict[str, Any]:
        """Framework-specific MLPSpec fields of the projector (e.g. BN in the hidden layer or not)."""
        return {}

    def build_projector(self, specs: HeadSpecs | None, feat_dim: int) -> nn.Module:
        """The projector, conditioned on the selected omega columns for the CASSLE variant."""
        assert specs is not None
        omega_columns = omega_dim(self.omega_keys) if self.conditioning else None
        return build_projector(specs.projector, feat_dim, self.conditioning, omega_columns)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups: LARS excludes biases and norms from weight decay and adaptation, SGD/AdamW do not."""
        return param_groups(self, self.config["weight_decay"], exclude_bias_and_norm=self.config["optimizer"] == "lars")

    def project(self, e: Tensor, omega: Tensor, momentum: bool = False) -> Tensor:
        """Projector output for features e of views described by omega (omega is used by CASSLE only)."""
        projector = self.momentum_projector if momentum else self.projector
        if self.conditioning is None:
            return projector(e)
        return projector(e, select_omega(omega, self.omega_keys))

    def embed(self, x: Tensor, momentum: bool = False) -> Tensor:
        """Backbone features of views in [0, 1] (normalised here, the model's input stage)."""
        backbone = self.momentum_backbone if momentum else self.backbone
        return backbone(self.normalize(x))

    def ssl_loss(self, views: Sequence[Tensor], omegas: Sequence[Tensor]) -> SSLOutput:
        raise NotImplementedError

    def forward(self, views: Sequence[Tensor], omegas: Sequence[Tensor], step: int = 0,
                total_steps: int = 1) -> dict[str, Tensor]:
        """Losses of one training step on two views and their omegas; `step` of `total_steps` sets the momentum
        encoder's rate (the engine passes both; the defaults give the rate at the start)."""
        if self.framework.momentum_encoder:
            self.update_momentum_encoder(self.momentum(step, total_steps))
        out = self.ssl_loss(views, omegas)
        losses = {"ssl": out.loss, "loss": out.loss}
        if self.augself is not None:
            augself_total, per_key = self.augself(*out.features, omegas[0], omegas[1])
            losses.update(per_key, loss=out.loss + augself_total)
        return losses

    def momentum(self, step: int, total_steps: int) -> float:
        """The momentum-encoder rate at `step` of `total_steps` (constant when ema == ema_final)."""
        return ema_momentum(step, total_steps, base=self.config["ema"], final=self.config["ema_final"])

    @torch.no_grad()
    def update_momentum_encoder(self, m: float) -> None:
        """EMA with rate `m` of the online backbone and projector parameters into the momentum copies, before
        computing keys as MoCo does (at step 0 both are equal, so the first update is the identity). The momentum
        copies keep their own BatchNorm statistics, as in MoCo and BYOL."""
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        target = [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - m)

    def export_backbone(self) -> dict[str, Tensor]:
        """The pretrained backbone as a plain torchvision state_dict."""
        return self.backbone.export_state_dict()
