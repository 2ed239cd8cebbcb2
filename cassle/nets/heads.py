"""MLP heads: the generic `mlp`, projector / predictor specs (each framework declares its own), AugSelf heads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _check_positive(**values: int) -> None:
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    last_bn: bool = True,
    last_bn_affine: bool = True,
    hidden_bn: bool = True,
    bias: bool | None = None,
) -> nn.Sequential:
    """(num_layers - 1) x [Linear -> BN1d -> ReLU], then Linear, then optional BN1d (the authors' `load_mlp`).

    Hidden Linears have a bias only when `hidden_bn=False`. `bias` is the final Linear's bias; None means
    "only without last BN". Unlike the authors' code, num_layers=1 is a single Linear(in_dim, out_dim).
    """
    _check_positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not hidden_bn))
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn if bias is None else bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class MLPSpec:
    """The shape of an `mlp` head; its input size is given at build time (backbone features or projector out)."""

    num_layers: int
    hidden_dim: int
    out_dim: int
    last_bn: bool = False
    last_bn_affine: bool = True
    hidden_bn: bool = True

    def __post_init__(self) -> None:
        _check_positive(num_layers=self.num_layers, hidden_dim=self.hidden_dim, out_dim=self.out_dim)

    def dims(self, in_dim: int) -> list[int]:
        """Sizes of the layer boundaries: [in_dim, hidden, ..., hidden, out_dim] (num_layers + 1 entries)."""
        return [in_dim, *([self.hidden_dim] * (self.num_layers - 1)), self.out_dim]

    def build(self, in_dim: int) -> nn.Sequential:
        return mlp(
            in_dim,
            self.hidden_dim,
            self.out_dim,
            self.num_layers,
            last_bn=self.last_bn,
            last_bn_affine=self.last_bn_affine,
            hidden_bn=self.hidden_bn,
        )


@dataclass(frozen=True)
class HeadSpecs:
    """A framework's projector and optional predictor (the predictor never sees omega). Each framework in
    cassle.methods declares its own (the paper's Table 5 and the authors' code)."""

    projector: MLPSpec
    predictor: MLPSpec | None = None

    def build_predictor(self) -> nn.Sequential | None:
        """The predictor, fed the projector's output."""
        return None if self.predictor is None else self.predictor.build(self.projector.out_dim)

    def with_projector(self, **fields: object) -> HeadSpecs:
        """These heads with some projector fields replaced (e.g. hidden_bn=False, num_layers=2)."""
        allowed = [f.name for f in dataclasses.fields(MLPSpec)]
        unknown = set(fields) - set(allowed)
        if unknown:
            raise ValueError(f"unknown projector field(s) {sorted(unknown)}; allowed: {allowed}")
        return dataclasses.replace(self, projector=dataclasses.replace(self.projector, **fields))


class AugSelfHead(nn.Module):
    """AugSelf's per-augmentation predictor on backbone features of both views:
    Linear(2F, 512)-BN-ReLU-Linear(512, 512)-BN-ReLU-Linear(512, out) applied to cat(y1, y2)."""

    def __init__(self, feat_dim: int, out_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        _check_positive(feat_dim=feat_dim)
        self.net = mlp(2 * feat_dim, hidden_dim, out_dim, num_layers=3, last_bn=False)

    def forward(self, y1: Tensor, y2: Tensor) -> Tensor:
        return self.net(torch.cat([y1, y2], dim=1))
