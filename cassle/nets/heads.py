"""MLP heads: the generic `mlp` (built from the shapes of specs.py) and AugSelf's heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cassle.nets.specs import check_positive


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
    check_positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
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


class AugSelfHead(nn.Module):
    """AugSelf's per-augmentation predictor on backbone features of both views:
    Linear(2F, 512)-BN-ReLU-Linear(512, 512)-BN-ReLU-Linear(512, out) applied to cat(y1, y2)."""

    def __init__(self, feat_dim: int, out_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        check_positive(feat_dim=feat_dim)
        self.net = mlp(2 * feat_dim, hidden_dim, out_dim, num_layers=3, last_bn=False)

    def forward(self, y1: Tensor, y2: Tensor) -> Tensor:
        return self.net(torch.cat([y1, y2], dim=1))
