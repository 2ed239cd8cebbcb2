"""MoCo-v1 without a projector (paper Table 10): InfoNCE with a queue directly on the backbone features."""

from __future__ import annotations

from torch import nn

from cassle.augment import omega_dim
from cassle.methods.mocov2 import MoCoV2
from cassle.nets import FeatureConditioner, HeadSpecs


class MoCoV1(MoCoV2):
    """The "projector" is the identity; CASSLE adds the augmentation embedding gamma(omega) to the features."""

    def build_projector(self, specs: HeadSpecs | None, feat_dim: int) -> nn.Module:
        if self.conditioning is None:
            return nn.Identity()
        return FeatureConditioner(feat_dim, omega_dim(self.omega_keys), self.conditioning.encoder_depth,
                                  self.conditioning.encoder_width)

    def queue_dim(self) -> int:
        return self.backbone.num_features
