"""Every framework as data: name, label, heads, defaults (the paper's Table 5 and the reference notes), conditioning.

No torch here: the config, the workflow plan (Snakemake's DAG, at every start) and the report read this table; a
framework's loss lives in its own module, named by `implementation` and imported only to build the model. Adding a
framework = its module + one `Framework` line below. Registration order is the order of the paper's tables.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cassle.core.registry import Registry
from cassle.nets.rules import INJECTIONS, ConditioningConfig, ConditioningError
from cassle.nets.specs import HeadSpecs, MLPSpec

if TYPE_CHECKING:
    from cassle.methods.base import Method

VARIANTS: dict[str, str] = {"vanilla": "Vanilla", "augself": "AugSelf", "cassle": "CASSLE"}
"""The variants every framework runs in (config key `variant`), with their labels in the paper's tables."""


@dataclass(frozen=True)
class Framework:
    """One framework: `implementation` ("module:Class") is its `Method` subclass; `heads` its projector and
    predictor shapes (None: no projector); `defaults` its config defaults; `momentum_encoder` whether it keeps
    momentum copies; `injections` the CASSLE injections it can use (`injection_note`: why not the others)."""

    name: str
    label: str
    implementation: str
    heads: HeadSpecs | None
    defaults: Mapping[str, Any]
    momentum_encoder: bool = False
    injections: tuple[str, ...] = tuple(INJECTIONS)
    injection_note: str = ""

    def method(self) -> type[Method]:
        """The `Method` subclass (imports its module, and torch)."""
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)

    def conditioning_config(self, config: Mapping[str, Any]) -> ConditioningConfig | None:
        """How the CASSLE variant conditions this framework's projector (None for the other variants); settings
        that do not go together, also with this framework, raise ConditioningError."""
        if config["variant"] != "cassle":
            return None
        conditioning = ConditioningConfig(
            omega_keys=tuple(config["conditioning.omega_keys"]),
            encoder_depth=config["conditioning.encoder_depth"],
            encoder_width=config["conditioning.encoder_width"],
            injection=config["conditioning.injection"],
            hypernet_bn=config["conditioning.hypernet_bn"],
        )
        if conditioning.injection not in self.injections:
            raise ConditioningError("injection", f"injection {conditioning.injection!r} is not allowed with framework "
                                    f"{self.name}{self.injection_note}; use {' or '.join(map(repr, self.injections))}")
        return conditioning


_MOCOV2_DEFAULTS = dict(backbone="resnet50", epochs=500, batch_size=256, optimizer="sgd", base_lr=0.03,
                        weight_decay=1e-4, warmup_epochs=0.0, temperature=0.2, queue_size=65536, ema=0.999,
                        ema_final=0.999)

FRAMEWORKS: Registry[Framework] = Registry("framework", [(framework.name, framework) for framework in (
    Framework("simclr", "SimCLR", "cassle.methods.simclr:SimCLR", HeadSpecs(MLPSpec(2, 2048, 128)),
              dict(backbone="resnet50", epochs=300, batch_size=1024, optimizer="sgd", base_lr=0.05,
                   weight_decay=1e-4, warmup_epochs=0.0, temperature=0.2)),
    # BN in the projector's hidden layer, as the authors' code; compat=original drops it.
    Framework("mocov2", "MoCo-v2", "cassle.methods.mocov2:MoCoV2", HeadSpecs(MLPSpec(2, 2048, 128)),
              _MOCOV2_DEFAULTS, momentum_encoder=True),
    Framework("barlow", "Barlow Twins", "cassle.methods.barlow:BarlowTwins",
              HeadSpecs(MLPSpec(3, 8192, 8192, last_bn=True, last_bn_affine=False)),
              dict(backbone="resnet50", epochs=500, batch_size=256, optimizer="sgd", base_lr=0.05,
                   weight_decay=1e-4, warmup_epochs=10.0, warmup_start_factor=0.1, lambd=0.0051)),
    Framework("mocov3", "MoCo-v3", "cassle.methods.mocov3:MoCoV3",
              HeadSpecs(MLPSpec(3, 4096, 256, last_bn=True, last_bn_affine=False),
                        MLPSpec(2, 4096, 256, last_bn=True, last_bn_affine=False)),
              dict(backbone="vit_small", epochs=300, batch_size=1024, optimizer="adamw", base_lr=1.5e-4,
                   weight_decay=0.1, warmup_epochs=40.0, temperature=0.2, ema=0.99, ema_final=1.0),
              momentum_encoder=True),
    Framework("byol", "BYOL", "cassle.methods.byol:BYOL", HeadSpecs(MLPSpec(2, 4096, 256), MLPSpec(2, 4096, 256)),
              dict(backbone="resnet50", epochs=300, batch_size=256, optimizer="lars", base_lr=0.2,
                   weight_decay=1.5e-6, warmup_epochs=10.0, ema=0.996, ema_final=1.0),
              momentum_encoder=True),
    Framework("simsiam", "SimSiam", "cassle.methods.simsiam:SimSiam",
              HeadSpecs(MLPSpec(3, 2048, 2048, last_bn=True), MLPSpec(2, 512, 2048)),
              dict(backbone="resnet50", epochs=500, batch_size=256, optimizer="sgd", base_lr=0.05,
                   weight_decay=1e-4, warmup_epochs=0.0)),
    Framework("mocov1", "MoCo-v1", "cassle.methods.mocov1:MoCoV1", None,
              {**_MOCOV2_DEFAULTS, "conditioning.injection": "add"}, momentum_encoder=True, injections=("add",),
              injection_note=" (it has no projector: CASSLE adds the augmentation embedding to the features)"),
)])
"""Every framework by name (config key `framework`)."""


def get_method(name: str) -> type[Method]:
    """The `Method` subclass of framework `name` (UnknownNameError, a ValueError, when there is none)."""
    return FRAMEWORKS[name].method()


def framework_defaults(name: str) -> dict[str, Any]:
    """The framework's config defaults (the paper's Table 5 and the reference notes)."""
    return dict(FRAMEWORKS[name].defaults)
