"""CASSLE conditioning: the augmentation encoder and the omega-conditioned projector.

omega (B x omega_dim, the already-selected columns of the augmentation descriptors) is mapped by the
augmentation encoder to an embedding g and injected into the projector input e (B x feat_dim):

- `cat`: projector(cat[e, g]); the first projector Linear takes feat_dim + g_dim inputs. With encoder
  depth 0, g is the raw omega.
- `add` / `mul`: the encoder outputs feat_dim values; projector(e + g) / projector(e * g).
- `hypernet`: the encoder (out_dim = T) generates per sample every weight and bias of the projector's
  layers (dims d_0 = feat_dim, hidden..., d_L = out), T = sum_l (d_l * d_{l+1} + d_{l+1}). The generated
  layers are applied with batched matmuls, ReLU between layers, optional BN between them (`hypernet_bn`),
  and the spec's final BN (not generated) when it has one. Generated weights are scaled by 1/sqrt(d_l).
  Cost: the encoder's last Linear has width * T weights plus 2T BN parameters, and a forward holds B x T
  generated values (MoCo-v2 head, 2048-2048-128: T = 4,458,624, i.e. ~285M hypernetwork parameters at
  width 64 and ~4.6 GB of generated weights for a batch of 256 in fp32).
- `none`: omega is ignored; the module holds exactly the vanilla projector (not a config choice).

`ConditioningConfig` (rules.py) holds every rule about which settings go together; the modules here and the
config validation (cassle.config) both rely on it, so a combination is checked in one place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cassle.nets.heads import mlp
from cassle.nets.rules import NO_INJECTION, ConditioningConfig
from cassle.nets.specs import MLPSpec

class AugmentationEncoder(nn.Module):
    """MLP gamma: omega (B x in_dim) -> g (B x out_dim): `mlp(in_dim, width, out_dim or width, depth, last_bn=True)`.

    The first layer is Linear + BN, so raw omega needs no standardisation. depth=0 is the identity (g = omega).
    """

    def __init__(self, in_dim: int, width: int = 64, depth: int = 6, out_dim: int | None = None) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"augmentation encoder depth must be >= 0 (0 = raw omega), got {depth}")
        if depth == 0 and out_dim not in (None, in_dim):
            raise ValueError(
                f"an augmentation encoder of depth 0 passes omega through, so out_dim must be None or "
                f"in_dim={in_dim}, got out_dim={out_dim}; use depth >= 1 to change the size"
            )
        self.in_dim = in_dim
        self.out_dim = in_dim if depth == 0 else (width if out_dim is None else out_dim)
        self.net = nn.Identity() if depth == 0 else mlp(in_dim, width, self.out_dim, depth, last_bn=True)

    def forward(self, omega: Tensor) -> Tensor:
        return self.net(omega)


def generated_param_count(dims: list[int]) -> int:
    """T: the number of weights and biases of a Linear stack with layer boundaries `dims`."""
    return sum(d_in * d_out + d_out for d_in, d_out in zip(dims[:-1], dims[1:]))


class GeneratedMLP(nn.Module):
    """Applies per-sample Linear layers whose weights come from a hypernetwork (see the module docstring)."""

    def __init__(self, spec: MLPSpec, in_dim: int, hidden_bn: bool) -> None:
        super().__init__()
        self.dims = spec.dims(in_dim)
        self.num_params = generated_param_count(self.dims)
        self.hidden_bns = nn.ModuleList(
            nn.BatchNorm1d(d) if hidden_bn else nn.Identity() for d in self.dims[1:-1]
        )
        self.last_bn = nn.BatchNorm1d(spec.out_dim, affine=spec.last_bn_affine) if spec.last_bn else nn.Identity()

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        """x: B x dims[0]; params: B x num_params (per layer: the d_in x d_out weight row-major, then the bias)."""
        batch, offset = x.shape[0], 0
        for layer, (d_in, d_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            weight = params[:, offset : offset + d_in * d_out].view(batch, d_in, d_out)
            offset += d_in * d_out
            bias = params[:, offset : offset + d_out]
            offset += d_out
            x = torch.baddbmm(bias.unsqueeze(1), x.unsqueeze(1), weight, alpha=d_in**-0.5).squeeze(1)
            if layer < len(self.hidden_bns):
                x = F.relu(self.hidden_bns[layer](x))
        return self.last_bn(x)


def _check_batch(e: Tensor, omega: Tensor, feat_dim: int, omega_dim: int) -> None:
    if e.ndim != 2 or e.shape[1] != feat_dim:
        raise ValueError(f"features must be B x {feat_dim}, got shape {tuple(e.shape)}")
    if omega.ndim != 2 or omega.shape != (e.shape[0], omega_dim):
        raise ValueError(
            f"omega must be B x omega_dim = {e.shape[0]} x {omega_dim} (one row per feature row, the selected "
            f"omega columns), got shape {tuple(omega.shape)}"
        )


class ConditionedProjector(nn.Module):
    """CASSLE's projector: forward(e, omega) -> z with omega injected as `injection` (see the module docstring)."""

    def __init__(
        self,
        projector: MLPSpec,
        feat_dim: int,
        omega_dim: int,
        injection: str = "cat",
        encoder_depth: int = 6,
        encoder_width: int = 64,
        encoder_out_dim: int | None = None,
        hypernet_bn: bool = False,
    ) -> None:
        super().__init__()
        ConditioningConfig(encoder_depth=encoder_depth, encoder_width=encoder_width, injection=injection,
                           hypernet_bn=hypernet_bn, encoder_out_dim=encoder_out_dim)  # raises on a bad combination
        self.injection = injection
        self.feat_dim = feat_dim
        self.omega_dim = omega_dim
        self.encoder: AugmentationEncoder | None = None
        if injection == NO_INJECTION:
            self.projector: nn.Module = projector.build(feat_dim)
        elif injection == "hypernet":
            self.projector = GeneratedMLP(projector, feat_dim, hypernet_bn)
            self.encoder = AugmentationEncoder(omega_dim, encoder_width, encoder_depth, self.projector.num_params)
        else:
            g_dim = feat_dim if injection in ("add", "mul") else encoder_out_dim
            self.encoder = AugmentationEncoder(omega_dim, encoder_width, encoder_depth, g_dim)
            in_dim = feat_dim + self.encoder.out_dim if injection == "cat" else feat_dim
            self.projector = projector.build(in_dim)

    def forward(self, e: Tensor, omega: Tensor) -> Tensor:
        if self.encoder is None:
            return self.projector(e)
        _check_batch(e, omega, self.feat_dim, self.omega_dim)
        g = self.encoder(omega.to(e.dtype))
        if self.injection == "cat":
            return self.projector(torch.cat([e, g], dim=1))
        if self.injection == "add":
            return self.projector(e + g)
        if self.injection == "mul":
            return self.projector(e * g)
        return self.projector(e, g)


class FeatureConditioner(nn.Module):
    """CASSLE for frameworks without a projector (MoCo-v1, paper Table 10): forward(e, omega) = e + gamma(omega)."""

    def __init__(self, feat_dim: int, omega_dim: int, encoder_depth: int = 6, encoder_width: int = 64) -> None:
        super().__init__()
        ConditioningConfig(encoder_depth=encoder_depth, encoder_width=encoder_width, injection="add")  # depth >= 1
        self.feat_dim = feat_dim
        self.omega_dim = omega_dim
        self.encoder = AugmentationEncoder(omega_dim, encoder_width, encoder_depth, feat_dim)

    def forward(self, e: Tensor, omega: Tensor) -> Tensor:
        _check_batch(e, omega, self.feat_dim, self.omega_dim)
        return e + self.encoder(omega.to(e.dtype))


def build_projector(
    spec: MLPSpec, feat_dim: int, conditioning: ConditioningConfig | None = None, omega_dim: int | None = None
) -> nn.Module:
    """The vanilla projector `spec.build(feat_dim)` (called as projector(e)) when conditioning is None, else a
    ConditionedProjector (called as projector(e, omega)) on omega_dim selected omega columns."""
    if conditioning is None:
        return spec.build(feat_dim)
    if omega_dim is None or omega_dim < 1:
        raise ValueError(
            f"a conditioned projector needs omega_dim >= 1 (cassle.augment.omega_dim(conditioning.omega_keys)), "
            f"got {omega_dim}"
        )
    return ConditionedProjector(
        spec,
        feat_dim,
        omega_dim,
        injection=conditioning.injection,
        encoder_depth=conditioning.encoder_depth,
        encoder_width=conditioning.encoder_width,
        encoder_out_dim=conditioning.encoder_out_dim,
        hypernet_bn=conditioning.hypernet_bn,
    )
