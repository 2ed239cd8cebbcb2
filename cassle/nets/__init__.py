"""Networks: backbones with per-stage features, MLP heads and CASSLE's omega-conditioned projector."""

from __future__ import annotations

from cassle.nets.backbones import (
    BACKBONES,
    NARROW_WIDTHS,
    Backbone,
    ResNetBackbone,
    ViTBackbone,
    build_backbone,
    init_like_torchvision,
    reset_parameters_like_authors,
    resnet_names,
)
from cassle.nets.conditioning import (
    INJECTIONS,
    AugmentationEncoder,
    ConditionedProjector,
    ConditioningConfig,
    ConditioningError,
    FeatureConditioner,
    GeneratedMLP,
    build_projector,
    generated_param_count,
)
from cassle.nets.heads import AugSelfHead, HeadSpecs, MLPSpec, mlp
from cassle.nets.inputs import IMAGENET_MEAN, IMAGENET_STD, STL10_MEAN, STL10_STD, Normalize, input_statistics

__all__ = [
    "BACKBONES",
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
    "ConditioningError",
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
    "init_like_torchvision",
    "input_statistics",
    "mlp",
    "reset_parameters_like_authors",
    "resnet_names",
]
