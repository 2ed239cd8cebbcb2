"""What each network of every framework is fed: the omega of each (online and momentum) projector, the features and
omegas of the AugSelf heads, the predictors' input, what enters MoCo's queue under each `compat`, and the momentum
update in closed form. Each test records the calls of one forward step and checks them against the views they
must come from, so swapping a view, an omega or a network fails it."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from cassle.augment import select_omega
from cassle.losses import infonce
from cassle.methods import FRAMEWORKS, build_method

from tiny_methods import fixed_batch, tiny_config

NAMES = tuple(FRAMEWORKS)
WITH_PREDICTOR = tuple(name for name, method in FRAMEWORKS.items() if method.heads and method.heads.predictor)
# (network, view) of every projector call in one step: the published methods' pairings
PROJECTOR_CALLS = {
    "simclr": [("online", 0), ("online", 1)],
    "barlow": [("online", 0), ("online", 1)],
    "simsiam": [("online", 0), ("online", 1)],
    "mocov2": [("online", 0), ("momentum", 1)],
    "mocov1": [("online", 0), ("momentum", 1)],
    "mocov3": [("online", 0), ("online", 1), ("momentum", 0), ("momentum", 1)],
    "byol": [("online", 0), ("online", 1), ("momentum", 0), ("momentum", 1)],
}
NETWORKS = {"online": (False, "projector"), "momentum": (True, "momentum_projector")}


def build(framework: str, variant: str, **overrides):
    """The tiny model in train mode with its momentum copies moved away from the online networks (as after some
    training), so that features, projections and EMA results tell the two apart."""
    torch.manual_seed(0)
    method = build_method(tiny_config(framework, variant, **overrides)).train()
    if method.framework.momentum_encoder:
        with torch.no_grad():
            for p in [*method.momentum_backbone.parameters(), *method.momentum_projector.parameters()]:
                p.add_(torch.randn_like(p) * 0.5)
    return method


def record_inputs(module: torch.nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_pre_hook(lambda _, args: calls.append(tuple(a.detach().clone() for a in args)))


def which_view(x: torch.Tensor, candidates: list[torch.Tensor]) -> int:
    """The index of the one candidate equal to x (features of one view)."""
    matches = [i for i, c in enumerate(candidates) if c.shape == x.shape and torch.allclose(x, c, atol=1e-6)]
    assert len(matches) == 1, f"the input matches views {matches}, expected exactly one"
    return matches[0]


@pytest.mark.parametrize("framework", NAMES)
def test_every_projector_gets_the_omega_of_its_own_view(framework):
    """CASSLE: each call of the online or momentum projector pairs a view's features with that view's omega, and the
    calls are the framework's (e.g. MoCo-v2: online on view 1, momentum on view 2). The momentum copies are updated
    before they run, so the features recomputed after the step are the ones they saw."""
    method = build(framework, "cassle", ema=0.5, ema_final=0.5)
    views, omegas = fixed_batch()
    calls = {net: [] for net in NETWORKS}
    handles = [record_inputs(getattr(method, attr), calls[net]) for net, (_, attr) in NETWORKS.items()
               if hasattr(method, attr)]
    method(views, omegas)
    for handle in handles:
        handle.remove()
    seen = []
    with torch.no_grad():
        for net, (momentum, attr) in NETWORKS.items():
            if not hasattr(method, attr):
                continue
            features = [method.embed(view, momentum=momentum) for view in views]
            for e, omega in calls[net]:
                view = which_view(e, features)
                assert torch.equal(omega, select_omega(omegas[view], method.omega_keys)), \
                    f"{framework}: the {net} projector got view {view + 1}'s features with another view's omega"
                seen.append((net, view))
    assert sorted(seen) == sorted(PROJECTOR_CALLS[framework])


@pytest.mark.parametrize("framework", NAMES)
def test_augself_heads_get_both_views_and_their_omegas_in_order(framework):
    """AugSelf predicts omega(view 1) vs omega(view 2) from the backbone features of view 1 (online) and view 2
    (online; MoCo's momentum backbone, as the authors' code)."""
    method = build(framework, "augself")
    views, omegas = fixed_batch()
    calls: list = []
    handle = record_inputs(method.augself, calls)
    method(views, omegas)
    handle.remove()
    (y1, y2, omega1, omega2), = calls
    second = framework in ("mocov2", "mocov1")
    with torch.no_grad():
        assert torch.allclose(y1, method.embed(views[0]), atol=1e-6)
        assert torch.allclose(y2, method.embed(views[1], momentum=second), atol=1e-6)
        if second:
            assert not torch.allclose(y2, method.embed(views[1]), atol=1e-3)
    assert torch.equal(omega1, omegas[0]) and torch.equal(omega2, omegas[1])


def test_augself_heads_see_both_orders_of_the_pair_in_one_batch():
    """As the authors: each head runs once over the 2N rows [(y1, y2); (y2, y1)], so its BatchNorm normalises over
    both orders together."""
    method = build("simclr", "augself")
    views, omegas = fixed_batch()
    calls = {key: [] for key in method.augself.heads}
    for key, head in method.augself.heads.items():
        record_inputs(head, calls[key])
    method(views, omegas)
    with torch.no_grad():
        y1, y2 = (method.embed(view) for view in views)
    for key, seen in calls.items():
        (first, second), = seen
        torch.testing.assert_close(first, torch.cat([y1, y2]), rtol=0, atol=1e-6)
        torch.testing.assert_close(second, torch.cat([y2, y1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["vanilla", "cassle"])
@pytest.mark.parametrize("framework", WITH_PREDICTOR)
def test_predictors_see_only_the_online_projection(framework, variant):
    """The predictor is fed exactly the online projector's outputs (omega reaches it only through them) and its
    first layer takes the projection's size."""
    method = build(framework, variant)
    views, omegas = fixed_batch()
    projections, predictor_inputs = [], []
    handles = [method.projector.register_forward_hook(lambda _, __, out: projections.append(out.detach().clone())),
               record_inputs(method.predictor, predictor_inputs)]
    method(views, omegas)
    for handle in handles:
        handle.remove()
    assert method.predictor[0].in_features == method.head_specs().projector.out_dim
    online = projections[:2]  # the online projector runs first, on view 1 then view 2
    assert len(predictor_inputs) == 2
    for (x,), z in zip(predictor_inputs, online):
        assert torch.equal(x, z)


@pytest.mark.parametrize("variant", ["vanilla", "cassle"])
@pytest.mark.parametrize("compat", ["original", "authors"])
@pytest.mark.parametrize("framework", ["mocov2", "mocov1"])
def test_the_queue_receives_keys_or_queries_by_compat_and_wraps(framework, compat, variant):
    """compat=original enqueues the momentum encoder's keys of view 2, compat=authors the online queries of view 1
    (the CASSLE authors' code), both L2-normalised, at the pointer, wrapping around the end; the loss uses the queue
    as it was before the step."""
    method = build(framework, variant, compat=compat, ema=0.5, ema_final=0.5)
    views, omegas = fixed_batch()
    size, batch = method.queue.shape[0], views[0].shape[0]
    method.queue_ptr.fill_(size - batch // 2)
    before = method.queue.clone()
    loss = method(views, omegas)["ssl"]
    with torch.no_grad():
        q = method.project(method.embed(views[0]), omegas[0])
        k = method.project(method.embed(views[1], momentum=True), omegas[1], momentum=True)
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    assert not torch.allclose(q, k, atol=1e-3)
    written = (size - batch // 2 + torch.arange(batch)) % size
    expected = k if compat == "original" else q
    torch.testing.assert_close(method.queue[written], expected, rtol=1e-5, atol=1e-6)
    untouched = torch.ones(size, dtype=torch.bool)
    untouched[written] = False
    assert torch.equal(method.queue[untouched], before[untouched])
    assert method.queue_ptr.item() == batch // 2
    assert loss.item() == pytest.approx(infonce(q, k, before, method.config["temperature"]).item(), rel=1e-5)


def rate(step: int, total: int, base: float, final: float) -> float:
    """The momentum rate of the published schedules: base at step 0, rising to final with half a cosine."""
    return final - (final - base) * (1 + math.cos(math.pi * step / total)) / 2


# framework, config overrides, the rate at step s of T (written out here, not read from the code)
EMA_CASES = [
    ("mocov2", {"ema": 0.9, "ema_final": 0.9}, lambda s, t: 0.9),
    ("mocov1", {"ema": 0.9, "ema_final": 0.9}, lambda s, t: 0.9),
    ("byol", {"ema": 0.5, "ema_final": 1.0}, lambda s, t: rate(s, t, 0.5, 1.0)),
    ("mocov3", {"ema": 0.5, "ema_final": 1.0}, lambda s, t: rate(s, t, 0.5, 1.0)),
    ("mocov3", {"ema": 0.5, "ema_final": 1.0, "compat": "authors"}, lambda s, t: 0.999),
]


@pytest.mark.parametrize("framework,overrides,m", EMA_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(EMA_CASES)])
def test_momentum_encoder_follows_the_closed_form_of_the_ema(framework, overrides, m):
    """With the online weights held still, k steps of theta_t <- m theta_t + (1 - m) theta_o leave
    theta_t = theta_o + prod(m_s) (theta_t0 - theta_o) for the backbone and the projector."""
    method = build(framework, "cassle" if framework == "mocov1" else "vanilla", **overrides)
    views, omegas = fixed_batch()
    total, steps = 8, (0, 2, 5)
    online = [p.detach().clone() for p in [*method.backbone.parameters(), *method.projector.parameters()]]
    start = [p.detach().clone() for p in [*method.momentum_backbone.parameters(),
                                          *method.momentum_projector.parameters()]]
    with torch.no_grad():
        for step in steps:
            method(views, omegas, step, total)
    factor = math.prod(m(step, total) for step in steps)
    assert 0.001 < factor < 0.999
    after = [*method.momentum_backbone.parameters(), *method.momentum_projector.parameters()]
    assert len(after) == len(online) and any(p.ndim > 1 for p in after)
    for theta_o, theta_0, theta in zip(online, start, after):
        torch.testing.assert_close(theta, theta_o + factor * (theta_0 - theta_o), rtol=1e-5, atol=1e-6)
    for p, theta_o in zip([*method.backbone.parameters(), *method.projector.parameters()], online):
        assert torch.equal(p, theta_o)  # the online weights are not pulled towards the momentum copies
