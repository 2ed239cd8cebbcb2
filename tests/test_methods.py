"""Every framework x variant: it trains, its loss falls on a fixed batch, and under 2-rank DDP it equals one process."""

from __future__ import annotations

import pytest
import torch

from cassle.config import ConfigError, resolve
from cassle.core.distributed import convert_sync_batchnorm
from cassle.methods import FRAMEWORKS, VARIANTS, build_method

from ddp import run_distributed
from tiny_methods import TINY, fixed_batch, tiny_config

NAMES = tuple(FRAMEWORKS)


def test_the_registry_holds_the_papers_frameworks_in_the_papers_order_and_config_reads_it():
    assert NAMES == ("simclr", "mocov2", "barlow", "mocov3", "byol", "simsiam", "mocov1")
    assert all(resolve({**TINY, "framework": name})["framework"] == name for name in NAMES)
    with pytest.raises(ConfigError, match=r"'framework' = 'moco'.*one of simclr, mocov2, barlow"):
        resolve({**TINY, "framework": "moco"})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("framework", NAMES)
def test_loss_falls_when_overfitting_one_batch(framework, variant):
    """Training on one fixed batch lowers the loss. The early window starts once MoCo's queue (64 entries) holds
    only keys of this batch, so that both windows measure the same objective."""
    torch.manual_seed(0)
    method = build_method(tiny_config(framework, variant)).train()
    views, omegas = fixed_batch()
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    history = []
    steps = 30
    for step in range(steps):
        losses = method(views, omegas, step, steps)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        assert all(torch.isfinite(value) for value in losses.values()), f"{framework}/{variant} step {step}"
        history.append(losses["loss"].item())
    early, late = sum(history[4:7]) / 3, sum(history[-3:]) / 3
    assert late < early, f"{framework}/{variant}: loss {early:.4f} -> {late:.4f}"
    assert (variant == "augself") == any(key.startswith("augself/") for key in losses)


@pytest.mark.parametrize("injection,depth", [("cat", 0), ("cat", 3), ("add", 2), ("mul", 2), ("hypernet", 2)])
def test_every_injection_trains_and_uses_omega(injection, depth):
    torch.manual_seed(0)
    config = tiny_config("simclr", "cassle", **{"conditioning.injection": injection,
                                                "conditioning.encoder_depth": depth,
                                                "conditioning.omega_keys": ["crop", "color"]})
    method = build_method(config).train()
    views, omegas = fixed_batch()
    loss = method(views, omegas)["loss"]
    loss.backward()
    encoder_grads = [p.grad for name, p in method.named_parameters() if "encoder" in name]
    assert depth == 0 or any(g is not None and g.abs().sum() > 0 for g in encoder_grads)
    with torch.no_grad():
        e = method.embed(views[0])
        shuffled = omegas[0][torch.randperm(omegas[0].shape[0])]
        assert not torch.allclose(method.project(e, omegas[0]), method.project(e, shuffled))


def test_vanilla_and_augself_ignore_omega():
    for variant in ("vanilla", "augself"):
        method = build_method(tiny_config("simclr", variant)).eval()
        views, omegas = fixed_batch()
        with torch.no_grad():
            e = method.embed(views[0])
            assert torch.equal(method.project(e, omegas[0]), method.project(e, torch.zeros_like(omegas[0])))


def _ddp_losses_and_grads(configs: list[dict], views, omegas, distributed: bool) -> list[tuple[float, dict]]:
    """Loss and parameter gradients of one forward/backward of each config on (this rank's share of) the batch."""
    from cassle.core.distributed import rank, world_size

    results = []
    for config in configs:
        torch.manual_seed(0)
        method = build_method(config).train()
        model = method
        if distributed:
            convert_sync_batchnorm(method)
            model = torch.nn.parallel.DistributedDataParallel(
                method, broadcast_buffers=False, find_unused_parameters=config["variant"] == "augself")
            share = views[0].shape[0] // world_size()
            part = slice(rank() * share, (rank() + 1) * share)
            views_here, omegas_here = [v[part] for v in views], [w[part] for w in omegas]
        else:
            views_here, omegas_here = views, omegas
        loss = model(views_here, omegas_here)["loss"]
        loss.backward()
        grads = {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    return results


@pytest.mark.slow
def test_every_framework_under_two_rank_ddp_equals_one_process_on_the_global_batch():
    """Forward value and gradients of the whole model (CASSLE and AugSelf) under gloo DDP with synchronised BN."""
    torch.manual_seed(0)
    configs = [tiny_config(framework, "cassle") for framework in NAMES]
    configs += [tiny_config("mocov2", "augself"), tiny_config("barlow", "augself")]
    views, omegas = fixed_batch(n=8)
    single = _ddp_losses_and_grads(configs, views, omegas, distributed=False)
    per_rank = run_distributed(_ddp_losses_and_grads, configs, views, omegas, True, timeout=300)
    for config, reference, rank0, rank1 in zip(configs, single, *per_rank):
        name = f"{config['framework']}/{config['variant']}"
        assert (rank0[0] + rank1[0]) / 2 == pytest.approx(reference[0], rel=1e-5, abs=1e-6), name
        assert rank0[1].keys() == reference[1].keys(), name
        model_scale = max(grad.abs().max().item() for grad in reference[1].values())
        for key, grad in reference[1].items():
            # float32 sums in another order: compare each tensor relative to its own scale, plus float noise relative
            # to the model's largest gradient (some gradients are zero in exact arithmetic, e.g. a bias feeding a
            # BatchNorm, and only that noise remains)
            tolerance = 1e-4 * grad.abs().max().item() + 1e-6 * model_scale
            for rank_grads in (rank0[1], rank1[1]):
                error = (rank_grads[key] - grad).abs().max().item()
                assert error <= tolerance, f"{name}: {key} differs by {error:.3g} (scale {grad.abs().max():.3g})"


def test_backbone_init_keys_reach_the_model():
    """zero_init_residual zeroes every residual block's last BN weight; backbone_init=authors draws every conv from
    PyTorch's default U(+-1/sqrt(fan_in)) (torchvision's kaiming-normal exceeds that bound); the momentum copy
    starts equal."""
    from torchvision.models.resnet import BasicBlock

    def convs(method):
        return [m.weight for m in method.backbone.modules() if isinstance(m, torch.nn.Conv2d)]

    torch.manual_seed(0)
    authors = build_method(tiny_config("mocov2", "vanilla", zero_init_residual=True, backbone_init="authors"))
    plain = build_method(tiny_config("mocov2", "vanilla"))
    blocks = [m for m in authors.backbone.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(torch.all(block.bn2.weight == 0) for block in blocks)
    assert all(torch.all(m.bn2.weight == 1) for m in plain.backbone.modules() if isinstance(m, BasicBlock))
    bound = [w[0].numel() ** -0.5 for w in convs(authors)]
    assert all(w.abs().max() <= b for w, b in zip(convs(authors), bound))
    assert any(w.abs().max() > b for w, b in zip(convs(plain), bound))
    assert all(torch.equal(a, b) for a, b in zip(authors.backbone.state_dict().values(),
                                                 authors.momentum_backbone.state_dict().values()))


@pytest.mark.parametrize("key,value", [("zero_init_residual", True), ("backbone_init", "authors")])
def test_resnet_init_keys_are_refused_for_the_vit(key, value):
    with pytest.raises(ConfigError, match=key):
        resolve({"framework": "mocov3", "epochs": 1, key: value})
