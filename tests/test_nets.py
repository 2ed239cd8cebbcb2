"""Backbones, MLP heads and the omega-conditioned projector (cassle.nets)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from torchvision.transforms import Normalize as TVNormalize

from cassle.methods import FRAMEWORKS
from cassle.nets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationEncoder,
    AugSelfHead,
    ConditionedProjector,
    ConditioningConfig,
    FeatureConditioner,
    MLPSpec,
    Normalize,
    build_backbone,
    build_projector,
    generated_param_count,
    mlp,
    reset_parameters_like_authors,
)

# --------------------------------------------------------------------------------------------- helpers


def copy_of(module: nn.Module, like: nn.Module) -> nn.Module:
    """`like` (an independently built module) loaded with `module`'s weights."""
    like.load_state_dict(module.state_dict())
    return like


def hand_bn(x: Tensor, bn: nn.BatchNorm1d) -> Tensor:
    """Training-mode batch norm written out: biased batch variance, optional affine."""
    y = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps)
    return y * bn.weight + bn.bias if bn.affine else y


def layer_summary(seq: nn.Sequential) -> list[tuple]:
    """(kind, sizes, flag) per layer: Linear -> (in, out, has bias); BN -> (features, affine)."""
    rows: list[tuple] = []
    for m in seq:
        if isinstance(m, nn.Linear):
            rows.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            rows.append(("bn", m.num_features, m.affine))
        elif isinstance(m, nn.ReLU):
            rows.append(("relu",))
        else:
            raise AssertionError(f"unexpected layer {m}")
    return rows


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------- backbones


@pytest.fixture(scope="module")
def resnet50_backbone():
    torch.manual_seed(0)
    return build_backbone("resnet50").eval()


@pytest.fixture(scope="module")
def vit_backbone():
    torch.manual_seed(0)
    return build_backbone("vit_small", image_size=32).eval()


RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "pooled")


@pytest.mark.parametrize(
    ("name", "cifar_stem", "expected"),
    [
        ("resnet_narrow", False, [(16, 8), (16, 8), (32, 4), (64, 2), (128, 1)]),
        ("resnet_narrow", True, [(16, 32), (16, 32), (32, 16), (64, 8), (128, 4)]),
        ("resnet18", True, [(64, 32), (64, 32), (128, 16), (256, 8), (512, 4)]),
        ("resnet18", False, [(64, 8), (64, 8), (128, 4), (256, 2), (512, 1)]),
    ],
)
def test_resnet_stage_shapes(name: str, cifar_stem: bool, expected: list[tuple[int, int]]) -> None:
    backbone = build_backbone(name, cifar_stem=cifar_stem).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stages = backbone.forward_stages(x)
        pooled = backbone(x)
    assert backbone.stage_names == RESNET_STAGES
    assert tuple(stages) == RESNET_STAGES
    for stage, (channels, size) in zip(RESNET_STAGES, expected):
        assert stages[stage].shape == (2, channels, size, size), stage
    assert backbone.num_features == expected[-1][0]
    assert pooled.shape == (2, backbone.num_features)
    torch.testing.assert_close(stages["pooled"], pooled)
    torch.testing.assert_close(pooled, stages["layer4"].mean(dim=(2, 3)))


def test_cifar_stem_layers() -> None:
    net = build_backbone("resnet18", cifar_stem=True).net
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(net.maxpool, nn.Identity)


def test_resnet50_stages(resnet50_backbone) -> None:
    with torch.no_grad():
        stages = resnet50_backbone.forward_stages(torch.randn(2, 3, 64, 64))
    assert [stages[s].shape[1] for s in RESNET_STAGES[:-1]] == [64, 256, 512, 1024, 2048]
    assert stages["pooled"].shape == (2, 2048) and resnet50_backbone.num_features == 2048


def test_vit_stages(vit_backbone) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stages = vit_backbone.forward_stages(x)
        pooled = vit_backbone(x)
    assert vit_backbone.stage_names == ("patch_embed", *(f"block{i}" for i in range(12)), "pooled")
    assert tuple(stages) == vit_backbone.stage_names
    assert stages["patch_embed"].shape == (2, 4, 384)  # (32 / 16)^2 patches
    assert all(stages[f"block{i}"].shape == (2, 5, 384) for i in range(12))
    assert vit_backbone.num_features == 384
    torch.testing.assert_close(stages["pooled"], pooled)


def _assert_plain_export(backbone, reference: nn.Module, classifier: str, x: Tensor) -> None:
    """The export loads into the plain torchvision model with only the classifier missing, and the features
    equal the torchvision model's with its classifier set to Identity."""
    result = reference.load_state_dict(backbone.export_state_dict(), strict=False)
    assert result.missing_keys and all(k.startswith(classifier + ".") for k in result.missing_keys)
    assert result.unexpected_keys == []
    setattr(reference, classifier, nn.Identity())
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), reference.eval()(x))


@pytest.mark.parametrize("cifar_stem", [False, True])
def test_export_resnet18(cifar_stem: bool) -> None:
    backbone = build_backbone("resnet18", cifar_stem=cifar_stem).eval()
    reference = torchvision.models.resnet18()
    if cifar_stem:
        reference.conv1, reference.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    _assert_plain_export(backbone, reference, "fc", torch.randn(2, 3, 32, 32))


def test_export_resnet50(resnet50_backbone) -> None:
    reference = torchvision.models.resnet50()
    assert sorted(reference.load_state_dict(resnet50_backbone.export_state_dict(), strict=False).missing_keys) == [
        "fc.bias", "fc.weight"
    ]
    _assert_plain_export(resnet50_backbone, reference, "fc", torch.randn(2, 3, 64, 64))


def test_export_vit(vit_backbone) -> None:
    reference = VisionTransformer(
        image_size=32, patch_size=16, num_layers=12, num_heads=12, hidden_dim=384, mlp_dim=1536
    )
    assert sorted(reference.load_state_dict(vit_backbone.export_state_dict(), strict=False).missing_keys) == [
        "heads.head.bias", "heads.head.weight"
    ]
    _assert_plain_export(vit_backbone, reference, "heads", torch.randn(2, 3, 32, 32))


def test_load_torchvision_state_dict_round_trip() -> None:
    x = torch.randn(4, 3, 32, 32)
    source = build_backbone("resnet_narrow", cifar_stem=True).eval()
    target = build_backbone("resnet_narrow", cifar_stem=True).eval()
    with torch.no_grad():
        assert not torch.allclose(source(x), target(x))
    state = {"module." + k: v for k, v in source.export_state_dict().items()}
    state |= {"module.fc.weight": torch.zeros(3, 128), "other.x": torch.zeros(1)}  # ignored: classifier, no prefix
    target.load_torchvision_state_dict(state, prefix="module.")
    with torch.no_grad():
        torch.testing.assert_close(source(x), target(x))


def test_load_torchvision_state_dict_tolerates_missing_bn_counters() -> None:
    source, target = build_backbone("resnet_narrow"), build_backbone("resnet_narrow")
    state = {k: v for k, v in source.export_state_dict().items() if not k.endswith("num_batches_tracked")}
    target.load_torchvision_state_dict(state)
    torch.testing.assert_close(target.net.conv1.weight, source.net.conv1.weight)


def test_load_torchvision_state_dict_wrong_architecture() -> None:
    narrow = build_backbone("resnet_narrow")
    with pytest.raises(ValueError, match=r"resnet_narrow.*shape mismatches.*conv1\.weight"):
        narrow.load_torchvision_state_dict(build_backbone("resnet_narrow", cifar_stem=True).export_state_dict())
    with torch.device("meta"):  # the check fails before any copy: no need for real weights
        resnet18_backbone, resnet18_state = build_backbone("resnet18"), torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match=r"missing keys.*layer1\.1\.bn1\.bias"):
        resnet18_backbone.load_torchvision_state_dict(narrow.export_state_dict())
    with pytest.raises(ValueError, match=r"unexpected keys"):
        narrow.load_torchvision_state_dict(resnet18_state)


def test_build_backbone_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet34'.*resnet18"):
        build_backbone("resnet34")
    with pytest.raises(ValueError, match="image_size.*multiple of the patch size 16, got 40"):
        build_backbone("vit_small", image_size=40)
    with pytest.raises(ValueError, match="cifar_stem=True"):
        build_backbone("vit_small", cifar_stem=True)


def test_zero_init_residual_and_authors_init() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet_narrow", zero_init_residual=True, authors_init=True)
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        assert torch.all(getattr(backbone.net, layer)[0].bn2.weight == 0)
        assert torch.all(getattr(backbone.net, layer)[0].bn1.weight == 1)
    # PyTorch's default conv init is U(+-1/sqrt(fan_in)); check the bound and a uniform's variance.
    conv = backbone.net.layer3[0].conv1
    bound = 1 / math.sqrt(conv.weight[0].numel())
    assert conv.weight.abs().max() <= bound
    assert conv.weight.var().item() == pytest.approx(bound**2 / 3, rel=0.05)
    linear = nn.Linear(400, 10)
    nn.init.constant_(linear.weight, 5.0)
    reset_parameters_like_authors(nn.Sequential(linear, nn.BatchNorm1d(10)))
    assert linear.weight.abs().max() <= 1 / math.sqrt(400)


def test_torchvision_init_kept_by_default() -> None:
    torch.manual_seed(0)
    conv = build_backbone("resnet_narrow").net.layer3[0].conv1  # 64 x 32 x 3 x 3, kaiming normal, fan_out
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


def test_narrow_resnet_trains_a_step() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet_narrow", cifar_stem=True)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
    x = torch.randn(64, 3, 32, 32)
    before = backbone.net.conv1.weight.detach().clone()
    loss = backbone(x).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in backbone.parameters())
    assert not torch.equal(before, backbone.net.conv1.weight)


def test_normalize_matches_torchvision() -> None:
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(Normalize()(x), TVNormalize(IMAGENET_MEAN, IMAGENET_STD)(x))
    assert Normalize().state_dict() == {}
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        Normalize()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize((0.5,), (0.0,))


# ----------------------------------------------------------------------------------------------- heads


def test_mlp_matches_hand_formula() -> None:
    torch.manual_seed(0)
    head = mlp(6, 10, 4, num_layers=3, last_bn=True, last_bn_affine=True)
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in head:
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
    x = torch.randn(8, 6)
    lin1, bn1, _, lin2, bn2, _, lin3, bn3 = head
    h = torch.relu(hand_bn(x @ lin1.weight.T, bn1))
    h = torch.relu(hand_bn(h @ lin2.weight.T, bn2))
    expected = hand_bn(h @ lin3.weight.T, bn3)
    torch.testing.assert_close(head(x), expected)


def test_mlp_against_hand_built_sequential() -> None:
    torch.manual_seed(0)
    head = mlp(6, 10, 4, num_layers=2, last_bn=True, last_bn_affine=False)
    reference = nn.Sequential(
        nn.Linear(6, 10, bias=False), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 4, bias=False),
        nn.BatchNorm1d(4, affine=False),
    )
    copy_of(head, reference)
    x = torch.randn(8, 6)
    torch.testing.assert_close(head(x), reference(x))
    head.eval(), reference.eval()
    torch.testing.assert_close(head(x), reference(x))


def test_mlp_bias_and_bn_flags() -> None:
    assert layer_summary(mlp(6, 10, 4, 2, last_bn=False, hidden_bn=False)) == [
        ("linear", 6, 10, True), ("relu",), ("linear", 10, 4, True)
    ]
    assert layer_summary(mlp(6, 10, 4, 2, last_bn=False, bias=False)) == [
        ("linear", 6, 10, False), ("bn", 10, True), ("relu",), ("linear", 10, 4, False)
    ]
    assert layer_summary(mlp(6, 10, 4, 1, last_bn=True)) == [("linear", 6, 4, False), ("bn", 4, True)]
    assert layer_summary(mlp(6, 10, 4, 1, last_bn=False)) == [("linear", 6, 4, True)]
    with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
        mlp(6, 10, 4, 0)


def _hidden(n_in: int, n_out: int) -> list[tuple]:
    return [("linear", n_in, n_out, False), ("bn", n_out, True), ("relu",)]


EXPECTED_HEADS = {
    "mocov2": (_hidden(512, 2048) + [("linear", 2048, 128, True)], None),
    "simclr": (_hidden(512, 2048) + [("linear", 2048, 128, True)], None),
    "barlow": (
        _hidden(512, 8192) + _hidden(8192, 8192) + [("linear", 8192, 8192, False), ("bn", 8192, False)], None
    ),
    "mocov3": (
        _hidden(512, 4096) + _hidden(4096, 4096) + [("linear", 4096, 256, False), ("bn", 256, False)],
        _hidden(256, 4096) + [("linear", 4096, 256, False), ("bn", 256, False)],
    ),
    "byol": (_hidden(512, 4096) + [("linear", 4096, 256, True)], _hidden(256, 4096) + [("linear", 4096, 256, True)]),
    "simsiam": (
        _hidden(512, 2048) + _hidden(2048, 2048) + [("linear", 2048, 2048, False), ("bn", 2048, True)],
        _hidden(2048, 512) + [("linear", 512, 2048, True)],
    ),
}


@pytest.mark.parametrize("framework", sorted(EXPECTED_HEADS))
def test_framework_head_layers(framework: str) -> None:
    """Layer sizes and BN placement of every framework's projector / predictor spec (built on meta: no memory)."""
    expected_projector, expected_predictor = EXPECTED_HEADS[framework]
    specs = FRAMEWORKS[framework].heads
    with torch.device("meta"):
        assert layer_summary(specs.projector.build(512)) == expected_projector
        predictor = specs.build_predictor()
    assert (None if predictor is None else layer_summary(predictor)) == expected_predictor
    assert {name for name, method in FRAMEWORKS.items() if method.heads is not None} == set(EXPECTED_HEADS)


def test_head_specs_overrides() -> None:
    mocov2, simsiam = FRAMEWORKS["mocov2"].heads, FRAMEWORKS["simsiam"].heads
    original_mocov2 = mocov2.with_projector(hidden_bn=False).projector.build(32)
    assert layer_summary(original_mocov2)[:2] == [("linear", 32, 2048, True), ("relu",)]
    assert simsiam.with_projector(num_layers=2).projector.dims(512) == [512, 2048, 2048]
    assert mocov2.projector.hidden_bn  # the framework's own spec is unchanged
    with pytest.raises(ValueError, match="unknown projector field.*'depth'"):
        mocov2.with_projector(depth=3)


def test_augself_head() -> None:
    torch.manual_seed(0)
    head = AugSelfHead(feat_dim=8, out_dim=4)
    assert layer_summary(head.net) == _hidden(16, 512) + _hidden(512, 512) + [("linear", 512, 4, True)]
    y1, y2 = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(head(y1, y2), head.net(torch.cat([y1, y2], 1)))
    assert not torch.allclose(head(y1, y2), head(y2, y1))


# ---------------------------------------------------------------------------------------- conditioning

FEAT, OMEGA, BATCH = 12, 5, 8
SPEC = MLPSpec(num_layers=2, hidden_dim=16, out_dim=6)
CONDITIONED = ["cat", "add", "mul", "hypernet"]


def inputs(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, FEAT, generator=g), torch.randn(BATCH, OMEGA, generator=g)


def test_augmentation_encoder_shape_and_identity() -> None:
    encoder = AugmentationEncoder(14, width=64, depth=6)
    layers = layer_summary(encoder.net)
    assert layers[:3] == _hidden(14, 64)
    assert layers[-2:] == [("linear", 64, 64, False), ("bn", 64, True)]
    assert sum(row[0] == "linear" for row in layers) == 6 and encoder.out_dim == 64
    assert AugmentationEncoder(14, depth=2, out_dim=7).out_dim == 7
    raw = AugmentationEncoder(14, depth=0)
    omega = torch.randn(3, 14)
    assert raw.out_dim == 14 and torch.equal(raw(omega), omega)
    with pytest.raises(ValueError, match="depth 0.*out_dim=7"):
        AugmentationEncoder(14, depth=0, out_dim=7)


def test_cat_raw_omega_equals_hand_concatenation() -> None:
    torch.manual_seed(0)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection="cat", encoder_depth=0)
    reference = copy_of(cp.projector, mlp(FEAT + OMEGA, 16, 6, 2, last_bn=False))
    e, omega = inputs()
    torch.testing.assert_close(cp(e, omega), reference(torch.cat([e, omega], 1)))


@pytest.mark.parametrize("injection", ["cat", "add", "mul"])
def test_cat_add_mul_equal_hand_composition(injection: str) -> None:
    torch.manual_seed(0)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection=injection, encoder_depth=3, encoder_width=10)
    g_dim = 10 if injection == "cat" else FEAT
    encoder = copy_of(cp.encoder.net, mlp(OMEGA, 10, g_dim, 3, last_bn=True))
    in_dim = FEAT + g_dim if injection == "cat" else FEAT
    projector = copy_of(cp.projector, mlp(in_dim, 16, 6, 2, last_bn=False))
    e, omega = inputs()
    g = encoder(omega)
    joined = {"cat": lambda: torch.cat([e, g], 1), "add": lambda: e + g, "mul": lambda: e * g}[injection]()
    torch.testing.assert_close(cp(e, omega), projector(joined))


def _generated_reference(cp: ConditionedProjector, e: Tensor, g: Tensor) -> Tensor:
    """Per-sample loop applying the generated layers; hidden / last BN in eval mode (per-sample affine maps)."""
    gen = cp.projector
    rows = []
    for i in range(e.shape[0]):
        h, offset = e[i], 0
        for layer, (d_in, d_out) in enumerate(zip(gen.dims[:-1], gen.dims[1:])):
            weight = g[i, offset : offset + d_in * d_out].reshape(d_in, d_out)
            bias = g[i, offset + d_in * d_out : offset + d_in * d_out + d_out]
            offset += d_in * d_out + d_out
            h = h @ weight / math.sqrt(d_in) + bias
            if layer < len(gen.dims) - 2:
                h = torch.relu(gen.hidden_bns[layer](h[None])[0])
        rows.append(gen.last_bn(h[None])[0])
    return torch.stack(rows)


def test_hypernet_equals_per_sample_loop() -> None:
    torch.manual_seed(0)
    spec = MLPSpec(num_layers=3, hidden_dim=7, out_dim=4)
    cp = ConditionedProjector(spec, FEAT, OMEGA, injection="hypernet", encoder_depth=2, encoder_width=9)
    e, omega = inputs()
    assert cp.projector.num_params == (FEAT * 7 + 7) + (7 * 7 + 7) + (7 * 4 + 4)
    total = cp.projector.num_params
    assert layer_summary(cp.encoder.net)[-2:] == [("linear", 9, total, False), ("bn", total, True)]
    g = copy_of(cp.encoder.net, mlp(OMEGA, 9, total, 2, last_bn=True))(omega)
    torch.testing.assert_close(cp(e, omega), _generated_reference(cp, e, g))


def test_hypernet_with_bn_equals_per_sample_loop_in_eval() -> None:
    torch.manual_seed(0)
    spec = MLPSpec(num_layers=2, hidden_dim=7, out_dim=4, last_bn=True, last_bn_affine=False)
    cp = ConditionedProjector(
        spec, FEAT, OMEGA, injection="hypernet", encoder_depth=2, encoder_width=9, hypernet_bn=True
    )
    for bn in (*cp.projector.hidden_bns, cp.projector.last_bn):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    cp.eval()
    e, omega = inputs()
    with torch.no_grad():
        g = cp.encoder(omega)
        torch.testing.assert_close(cp(e, omega), _generated_reference(cp, e, g))


def test_hypernet_parameter_count_formula() -> None:
    """Hypernetwork = trunk + width * T (last Linear, no bias) + 2T (last BN affine)."""
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection="hypernet", encoder_depth=3, encoder_width=10)
    total = generated_param_count(SPEC.dims(FEAT))
    assert total == FEAT * 16 + 16 + 16 * 6 + 6
    trunk = (OMEGA * 10 + 2 * 10) + (10 * 10 + 2 * 10)
    assert n_params(cp) == trunk + 10 * total + 2 * total


def test_none_is_exactly_the_vanilla_projector() -> None:
    torch.manual_seed(3)
    vanilla = SPEC.build(FEAT)
    torch.manual_seed(3)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection="none")
    assert [(n, p.shape) for n, p in cp.projector.named_parameters()] == [
        (n, p.shape) for n, p in vanilla.named_parameters()
    ]
    assert all(torch.equal(a, b) for a, b in zip(cp.parameters(), vanilla.parameters()))
    assert n_params(cp) == n_params(vanilla)
    e, omega = inputs()
    assert torch.equal(cp(e, omega), vanilla(e))
    assert torch.equal(cp(e, torch.randn(3, 99)), vanilla(e))


@pytest.mark.parametrize("injection", CONDITIONED)
def test_gradients_reach_the_encoder(injection: str) -> None:
    torch.manual_seed(0)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection=injection, encoder_depth=2, encoder_width=8)
    e, omega = inputs()
    cp(e.requires_grad_(), omega).pow(2).sum().backward()
    encoder_linears = [m for m in cp.encoder.modules() if isinstance(m, nn.Linear)]
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in encoder_linears)
    assert e.grad is not None and e.grad.abs().sum() > 0


@pytest.mark.parametrize(("injection", "depth"), [("cat", 0)] + [(name, 2) for name in CONDITIONED])
def test_omega_changes_the_output(injection: str, depth: int) -> None:
    torch.manual_seed(0)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, injection=injection, encoder_depth=depth, encoder_width=8)
    e, omega = inputs()
    _, other = inputs(seed=1)
    assert not torch.allclose(cp(e, omega), cp(e, other))


def test_feature_conditioner() -> None:
    torch.manual_seed(0)
    conditioner = FeatureConditioner(FEAT, OMEGA, encoder_depth=3, encoder_width=10)
    encoder = copy_of(conditioner.encoder.net, mlp(OMEGA, 10, FEAT, 3, last_bn=True))
    e, omega = inputs()
    torch.testing.assert_close(conditioner(e, omega), e + encoder(omega))
    with pytest.raises(ValueError, match=r"encoder_depth >= 1\).*got encoder_depth=0"):
        FeatureConditioner(FEAT, OMEGA, encoder_depth=0)


def test_conditioned_projector_errors() -> None:
    with pytest.raises(ValueError, match="unknown injection 'concat'.*cat, add"):
        ConditionedProjector(SPEC, FEAT, OMEGA, injection="concat")
    with pytest.raises(ValueError, match="injection 'add' needs.*encoder_depth=0"):
        ConditionedProjector(SPEC, FEAT, OMEGA, injection="add", encoder_depth=0)
    with pytest.raises(ValueError, match="encoder_out_dim=3 only applies to injection 'cat'"):
        ConditionedProjector(SPEC, FEAT, OMEGA, injection="mul", encoder_out_dim=3)
    cp = ConditionedProjector(SPEC, FEAT, OMEGA, encoder_depth=2)
    e, omega = inputs()
    with pytest.raises(ValueError, match=r"omega must be B x omega_dim = 8 x 5.*\(8, 4\)"):
        cp(e, omega[:, :4])
    with pytest.raises(ValueError, match=r"features must be B x 12"):
        cp(e[:, :3], omega)


def test_build_projector_and_config() -> None:
    torch.manual_seed(0)
    vanilla = build_projector(SPEC, FEAT)
    assert isinstance(vanilla, nn.Sequential) and layer_summary(vanilla) == layer_summary(SPEC.build(FEAT))
    config = ConditioningConfig(omega_keys=["crop", "color"], encoder_depth=2, encoder_out_dim=3)
    assert config.omega_keys == ("crop", "color")
    cp = build_projector(SPEC, FEAT, config, omega_dim=OMEGA)
    assert isinstance(cp, ConditionedProjector) and cp.encoder.out_dim == 3
    assert cp.projector[0].in_features == FEAT + 3
    assert ConditioningConfig().omega_keys == ("blur", "color", "color_diff", "crop", "flip", "grayscale")
    with pytest.raises(ValueError, match="omega_dim >= 1.*got None"):
        build_projector(SPEC, FEAT, config)
    with pytest.raises(ValueError, match="unknown injection 'hyper'"):
        ConditioningConfig(injection="hyper")
    with pytest.raises(ValueError, match="without repeats"):
        ConditioningConfig(omega_keys=("crop", "crop"))


def test_parameter_overhead_resnet50_mocov2(resnet50_backbone, capsys) -> None:
    """Paper: the 6 x 64 encoder adds ~0.1% parameters to ResNet-50 + MoCo-v2 head. The encoder alone is
    ~0.08%; widening the projector's first Linear by 64 inputs adds 64 * 2048 more (~0.55% in all)."""
    spec = FRAMEWORKS["mocov2"].heads.projector
    vanilla = n_params(resnet50_backbone) + n_params(spec.build(2048))
    assert n_params(resnet50_backbone) == n_params(torchvision.models.resnet50()) - (2048 * 1000 + 1000)
    cp = build_projector(spec, 2048, ConditioningConfig(), omega_dim=14)
    encoder = n_params(cp.encoder)
    assert encoder == (14 * 64 + 128) + 4 * (64 * 64 + 128) + (64 * 64 + 128)
    overhead = n_params(resnet50_backbone) + n_params(cp) - vanilla
    assert overhead == encoder + 64 * 2048
    with capsys.disabled():
        print(f"\nCASSLE overhead on ResNet-50 + MoCo-v2 head ({vanilla:,} params): encoder {encoder:,} "
              f"({100 * encoder / vanilla:.3f}%), total {overhead:,} ({100 * overhead / vanilla:.3f}%)")
    assert 0.0005 < encoder / vanilla < 0.0015
    assert overhead / vanilla < 0.01
