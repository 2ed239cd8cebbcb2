"""Networks: backbones with per-stage features, MLP heads and CASSLE's omega-conditioned projector."""

from __future__ import annotations

from cassle.nets.backbones import (
    BACKBONE_NAMES,
    NARROW_WIDTHS,
    Backbone,
    ResNetBackbone,
    ViTBackbone,
    build_backbone,
    init_like_torchvision,
    reset_parameters_like_authors,
)
from cassle.nets.conditioning import (
    DEFAULT_OMEGA_KEYS,
    INJECTIONS,
    AugmentationEncoder,
    ConditionedProjector,
    ConditioningConfig,
    FeatureConditioner,
    GeneratedMLP,
    build_projector,
    generated_param_count,
)
from cassle.nets.heads import FRAMEWORK_HEADS, AugSelfHead, HeadSpecs, MLPSpec, head_specs, mlp
from cassle.nets.inputs import IMAGENET_MEAN, IMAGENET_STD, STL10_MEAN, STL10_STD, Normalize

__all__ = [
    "BACKBONE_NAMES",
    "DEFAULT_OMEGA_KEYS",
    "FRAMEWORK_HEADS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INJECTIONS",
    "NARROW_WIDTHS",
    "STL10_MEAN",
    "STL10_STD",
    "AugSelfHead",
    "AugmentationEncoder",
    "Backbone",
    "ConditionedProjector",
    "ConditioningConfig",
    "FeatureConditioner",
    "GeneratedMLP",
    "HeadSpecs",
    "MLPSpec",
    "Normalize",
    "ResNetBackbone",
    "ViTBackbone",
    "build_backbone",
    "build_projector",
    "generated_param_count",
    "head_specs",
    "init_like_torchvision",
    "mlp",
    "reset_parameters_like_authors",
]
