"""Feature extractors: torchvision ResNets / ViT-S without their classifier, with per-stage outputs.

Every backbone wraps a plain torchvision model (`.net`) whose classifier is replaced by `nn.Identity`, so
`export_state_dict()` is a torchvision state dict minus `fc.*` (ResNet) or `heads.*` (ViT), loadable with
`torchvision.models.resnet50().load_state_dict(sd, strict=False)`. Input normalisation is not part of the
backbone: see `cassle.nets.inputs.Normalize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer, resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from cassle.nets.catalog import BACKBONES, NARROW_WIDTHS

_RESNET_LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
_MAX_KEYS_IN_ERROR = 8


class Backbone(nn.Module):
    """A torchvision trunk (`self.net`, classifier removed) mapping images to B x `num_features` features."""

    stage_names: tuple[str, ...]
    classifier_prefix: str

    def __init__(self, net: nn.Module, num_features: int, name: str) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features, B x num_features."""
        return self.net(x)

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's output, keyed by `stage_names` (the last one, `pooled`, equals `forward(x)`)."""
        raise NotImplementedError

    def export_state_dict(self) -> dict[str, Tensor]:
        """A plain torchvision state dict of this architecture without the classifier's keys."""
        return dict(self.net.state_dict())

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str = "") -> None:
        """Load a plain torchvision state dict (classifier keys are ignored).

        Only keys starting with `prefix` are used, with the prefix stripped (e.g. "module.encoder_q." for a
        MoCo checkpoint). Raises ValueError naming missing, unexpected and wrongly shaped keys when the
        checkpoint was made for another architecture.
        """
        incoming = {
            key[len(prefix):]: value
            for key, value in state_dict.items()
            if key.startswith(prefix) and not key[len(prefix):].startswith(self.classifier_prefix)
        }
        own = self.net.state_dict()
        # BatchNorm tolerates a missing num_batches_tracked (old checkpoints); everything else must match.
        missing = sorted(k for k in own.keys() - incoming.keys() if not k.endswith("num_batches_tracked"))
        unexpected = sorted(incoming.keys() - own.keys())
        mismatched = sorted(
            f"{k} (checkpoint {tuple(incoming[k].shape)}, model {tuple(own[k].shape)})"
            for k in own.keys() & incoming.keys()
            if incoming[k].shape != own[k].shape
        )
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
        problems = [f"{label} ({len(keys)}): {_first_keys(keys)}" for label, keys in found.items() if keys]
        if problems:
            raise ValueError(
                f"state dict does not fit backbone {self.name!r} (prefix={prefix!r}): {'; '.join(problems)}. "
                "Build the backbone with the checkpoint's architecture (name, cifar_stem, image_size) "
                "or pass the prefix its keys carry."
            )
        self.net.load_state_dict(incoming)


def _first_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_IN_ERROR])
    return shown + (", ..." if len(keys) > _MAX_KEYS_IN_ERROR else "")


class ResNetBackbone(Backbone):
    """A torchvision ResNet with `fc = Identity`; stages: stem (conv1/bn1/relu/maxpool), layer1..4, pooled."""

    stage_names = ("stem", *_RESNET_LAYERS, "pooled")
    classifier_prefix = "fc."

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        stages = {"stem": x}
        for name in _RESNET_LAYERS:
            x = getattr(net, name)(x)
            stages[name] = x
        stages["pooled"] = torch.flatten(net.avgpool(x), 1)
        return stages


class ViTBackbone(Backbone):
    """A torchvision VisionTransformer with `heads = Identity`; the pooled feature is the final class token.

    Stages: `patch_embed` (B x N x D patch tokens), `block{i}` (B x (N+1) x D token maps, class token first,
    before the final LayerNorm) and `pooled` (LayerNorm-ed class token).
    """

    classifier_prefix = "heads."

    def __init__(self, net: VisionTransformer, name: str) -> None:
        super().__init__(net, net.hidden_dim, name)
        self.stage_names = ("patch_embed", *(f"block{i}" for i in range(len(net.encoder.layers))), "pooled")

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        net = self.net
        tokens = net._process_input(x)
        stages = {"patch_embed": tokens}
        x = torch.cat([net.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = net.encoder.dropout(x + net.encoder.pos_embedding)
        for i, block in enumerate(net.encoder.layers):
            x = block(x)
            stages[f"block{i}"] = x
        stages["pooled"] = net.encoder.ln(x)[:, 0]
        return stages


def init_like_torchvision(module: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's ResNet init on `module`: kaiming-normal convs (fan_out), BN weight 1 / bias 0,
    and optionally the last BN of every residual block at 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def reset_parameters_like_authors(module: nn.Module) -> None:
    """The authors' init (their `models.reset_parameters`): PyTorch's default init for every Linear and Conv2d
    (kaiming-uniform a=sqrt(5), i.e. U(+-1/sqrt(fan_in)) for Linear), overriding torchvision's kaiming-normal.
    Norm layers are left alone, so a `zero_init_residual` zero BN weight survives."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.reset_parameters()


def _narrow_resnet(widths: Sequence[int], zero_init_residual: bool) -> ResNet:
    """A torchvision ResNet of BasicBlocks, one block per stage, with stage widths `widths`."""
    net = ResNet(BasicBlock, [1, 1, 1, 1])
    net.inplanes = widths[0]
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    for i, (name, width) in enumerate(zip(_RESNET_LAYERS, widths)):
        setattr(net, name, net._make_layer(BasicBlock, width, 1, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(widths[-1], net.fc.out_features)
    init_like_torchvision(net, zero_init_residual)
    return net


def _use_cifar_stem(net: ResNet) -> None:
    """3x3 stride-1 conv1 and no max-pool (the authors' cifar_resnet), initialised like torchvision."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    init_like_torchvision(net.conv1)
    net.maxpool = nn.Identity()


def build_resnet(name: str, cifar_stem: bool, image_size: int, zero_init_residual: bool) -> ResNetBackbone:
    """A torchvision ResNet trunk (any image size)."""
    if name == "resnet_narrow":
        net = _narrow_resnet(NARROW_WIDTHS, zero_init_residual)
    else:
        builder = {"resnet18": resnet18, "resnet50": resnet50}[name]
        net = builder(weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        _use_cifar_stem(net)
    num_features = net.fc.in_features
    net.fc = nn.Identity()
    return ResNetBackbone(net, num_features, name)


def build_vit_small(name: str, cifar_stem: bool, image_size: int, zero_init_residual: bool) -> ViTBackbone:
    """ViT-S/16 (`name`: vit_small) for `image_size` inputs."""
    if cifar_stem or zero_init_residual:
        raise ValueError(
            f"vit_small has no ResNet stem or residual BN: got cifar_stem={cifar_stem}, "
            f"zero_init_residual={zero_init_residual}; leave both False"
        )
    if image_size <= 0 or image_size % 16:
        raise ValueError(f"vit_small needs image_size a positive multiple of the patch size 16, got {image_size}")
    # ViT-S sizes with MoCo-v3's 12 heads (the CASSLE authors' vits.py, from MoCo-v3; DeiT-S has 6).
    net = VisionTransformer(
        image_size=image_size, patch_size=16, num_layers=12, num_heads=12, hidden_dim=384, mlp_dim=1536
    )
    net.heads = nn.Identity()
    return ViTBackbone(net, name)


def build_backbone(
    name: str,
    cifar_stem: bool = False,
    *,
    image_size: int = 224,
    zero_init_residual: bool = False,
    authors_init: bool = False,
) -> Backbone:
    """Build a registered backbone (BACKBONES) by name; never downloads weights.

    cifar_stem: ResNets only, 3x3 stride-1 conv1 and no max-pool. image_size: ViT only (ResNets take any size).
    zero_init_residual: ResNets only, zero the last BN weight of each residual block.
    authors_init: apply `reset_parameters_like_authors` instead of keeping torchvision's init.
    """
    builder = globals()[BACKBONES[name].builder]
    backbone = builder(name, cifar_stem, image_size, zero_init_residual)
    if authors_init:
        reset_parameters_like_authors(backbone)
    return backbone
