"""The registered backbones by name, without torch: the config and the workflow plan check names against it."""

from __future__ import annotations

from dataclasses import dataclass

from cassle.core.registry import Registry

NARROW_WIDTHS: tuple[int, int, int, int] = (16, 32, 64, 128)
"""Stage widths of `resnet_narrow`, the ResNet-18 layout for quick CPU runs."""


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one backbone: `builder` names the function of cassle.nets.backbones called as
    `builder(name, cifar_stem, image_size, zero_init_residual)`; `resnet` says it is a torchvision ResNet, the
    architecture an external state_dict checkpoint may have."""

    builder: str
    resnet: bool


BACKBONES: Registry[BackboneEntry] = Registry("backbone", [
    ("resnet18", BackboneEntry("build_resnet", resnet=True)),
    ("resnet50", BackboneEntry("build_resnet", resnet=True)),
    ("resnet_narrow", BackboneEntry("build_resnet", resnet=True)),
    ("vit_small", BackboneEntry("build_vit_small", resnet=False)),
])
"""Every backbone by name (config key `backbone`)."""


def resnet_names() -> tuple[str, ...]:
    """The registered torchvision ResNets: the architectures an external state_dict checkpoint may have."""
    return tuple(name for name, entry in BACKBONES.items() if entry.resnet)
