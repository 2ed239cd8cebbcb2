"""Networks: backbones with per-stage features, MLP heads and CASSLE's omega-conditioned projector.

Names, shapes and rules (catalog.py, specs.py, rules.py) import without torch; the rest loads on first use.
"""

from __future__ import annotations

from cassle.core.lazy import lazy_namespace

__all__, __getattr__, __dir__ = lazy_namespace(__name__, {
    "backbones": ["Backbone", "ResNetBackbone", "ViTBackbone", "build_backbone", "init_like_torchvision",
                  "reset_parameters_like_authors"],
    "catalog": ["BACKBONES", "NARROW_WIDTHS", "resnet_names"],
    "conditioning": ["AugmentationEncoder", "ConditionedProjector", "FeatureConditioner", "GeneratedMLP",
                     "build_projector", "generated_param_count"],
    "heads": ["AugSelfHead", "mlp"],
    "inputs": ["IMAGENET_MEAN", "IMAGENET_STD", "STL10_MEAN", "STL10_STD", "Normalize", "input_statistics"],
    "rules": ["INJECTIONS", "ConditioningConfig", "ConditioningError"],
    "specs": ["HeadSpecs", "MLPSpec"],
})
