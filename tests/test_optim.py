"""LARS against a hand-written update, parameter groups, the optimiser factory and the schedules."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from cassle.core.lars import LARS
from cassle.core.optim import build_optimizer, param_groups, scaled_lr
from cassle.core.schedules import StepwiseLR, ema_momentum, warmup_cosine


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.predictor = nn.Linear(8, 2, bias=True)


def _net() -> Net:
    torch.manual_seed(0)
    return Net().double()


def _backward(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    model.zero_grad()
    out = model.predictor(model.backbone(x))
    (out**2).mean().backward()


@pytest.mark.parametrize("clip", [False, True])
def test_lars_matches_hand_written_update(clip: bool) -> None:
    lr, wd, eta, mom = 0.3, 1e-2, 0.02, 0.9
    model, ref = _net(), _net()
    with torch.no_grad():  # a zero weight takes the "trust ratio 1" branch
        model.predictor.weight.zero_()
        ref.predictor.weight.zero_()
    opt = LARS(param_groups(model, wd), lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=eta, clip=clip)
    buffers = {name: torch.zeros_like(p) for name, p in ref.named_parameters()}
    clipped = set()  # (name, clip bound): with clip, some layers must take each branch for the test to mean anything
    for step in range(3):
        _backward(model, step)
        opt.step()
        _backward(ref, step)
        with torch.no_grad():
            for name, p in ref.named_parameters():
                excluded = p.ndim == 1  # biases and BN
                d = p.grad if excluded else p.grad + wd * p
                if not excluded:
                    p_norm, d_norm = p.norm().item(), d.norm().item()
                    if p_norm > 0 and d_norm > 0:
                        ratio = eta * p_norm / d_norm
                        if clip:
                            clipped.add((name, ratio > lr))
                            ratio = min(ratio / lr, 1.0)
                        d = d * ratio
                buffers[name] = mom * buffers[name] + d
                p -= lr * buffers[name]
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=name)
    assert model.predictor.weight.abs().sum() > 0  # it did move
    assert not clip or {bound for _, bound in clipped} == {True, False}, clipped


def test_lars_rejects_negative_hyperparameters() -> None:
    with pytest.raises(ValueError, match="momentum=-0.1"):
        LARS(_net().parameters(), lr=0.1, momentum=-0.1)


def _ids(params: list[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_default_excludes_bias_and_norm() -> None:
    model = _net()
    groups = param_groups(model, weight_decay=1e-4)
    assert [(g["name"], g["weight_decay"], g["lr_multiplier"], g["lars_adaptation"]) for g in groups] == [
        ("decay", 1e-4, 1.0, True), ("no_decay", 0.0, 1.0, False)]
    one_d = _ids([p for p in model.parameters() if p.ndim == 1])
    assert _ids(groups[1]["params"]) == one_d
    assert _ids(groups[0]["params"]) == _ids(list(model.parameters())) - one_d


def test_param_groups_authors_barlow_setting_and_prefixes() -> None:
    model = _net()
    model.backbone[0].bias.requires_grad_(False)  # frozen parameters are left out
    groups = param_groups(model, 1e-4, exclude_bias_and_norm=False,
                          lr_multipliers={"bias_and_norm": 0.024, "predictor": 10.0})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "decay_x0.024", "decay_x10", "decay_x0.24"}
    assert all(g["weight_decay"] == 1e-4 and g["lars_adaptation"] for g in groups)
    assert _ids(by_name["decay_x0.024"]["params"]) == _ids(list(model.backbone[1].parameters()))
    assert _ids(by_name["decay_x10"]["params"]) == {id(model.predictor.weight)}
    assert by_name["decay_x0.24"]["params"] == [model.predictor.bias]
    assert by_name["decay_x0.24"]["lr_multiplier"] == pytest.approx(0.24)
    assert sum(len(g["params"]) for g in groups) == 5
    with pytest.raises(ValueError, match=r"\['projector'\] match no parameter.*'backbone', 'predictor'"):
        param_groups(model, 1e-4, lr_multipliers={"projector": 2.0})


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_sets_group_lrs(name: str, cls: type) -> None:
    groups = param_groups(_net(), 1e-4, lr_multipliers={"predictor": 0.5})
    opt = build_optimizer(name, groups, lr=0.2, weight_decay=0.3)
    assert isinstance(opt, cls)
    assert [g["lr"] for g in opt.param_groups] == [0.2 * g["lr_multiplier"] for g in groups]
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in groups]
    assert not any(g.get("fused") for g in opt.param_groups)  # CPU tensors: no fused kernels


def test_build_optimizer_sgd_step_matches_formula_and_accepts_plain_params() -> None:
    model = _net()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer("sgd", param_groups(model, 0.1), lr=0.5, momentum=0.9)
    _backward(model, 0)
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        wd = 0.0 if p.ndim == 1 else 0.1
        torch.testing.assert_close(p.detach(), p0 - 0.5 * (g + wd * p0))
    plain = build_optimizer("sgd", model.parameters(), lr=0.1)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="unknown optimiser 'adam'.*sgd, lars, adamw"):
        build_optimizer("adam", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer("sgd", [], lr=0.1)


def test_scaled_lr() -> None:
    assert scaled_lr(0.03, 512) == pytest.approx(0.06)
    assert scaled_lr(0.05, 1024) == pytest.approx(0.2)
    assert scaled_lr(1.5e-4, 1024, reference=256) == pytest.approx(6e-4)
    with pytest.raises(ValueError, match="batch_size=0"):
        scaled_lr(0.03, 0)


# ---------------------------------------------------------------- schedules


def test_warmup_cosine_closed_form() -> None:
    lr = partial(warmup_cosine, total_steps=110, warmup_steps=10, base_lr=1.0, final_lr=0.1, warmup_start=0.1)
    assert lr(0) == pytest.approx(0.1)  # start
    assert lr(5) == pytest.approx(0.55)  # half-way through warm-up
    assert lr(10) == pytest.approx(1.0)  # end of warm-up
    assert lr(60) == pytest.approx(0.55)  # middle of the cosine
    assert lr(35) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(110) == pytest.approx(0.1)  # end
    assert warmup_cosine(0, 10, 0, base_lr=2.0) == 2.0  # no warm-up
    with pytest.raises(ValueError, match=r"step=111 is outside \[0, total_steps=110\]"):
        lr(111)
    with pytest.raises(ValueError, match="warmup_steps=10"):
        warmup_cosine(0, 10, 10, base_lr=1.0)


def test_warmup_cosine_matches_torch_schedulers() -> None:
    """Independent reference: torch's LinearLR followed by CosineAnnealingLR, stepped per step."""
    total, warmup, base, final = 50, 8, 0.4, 0.004
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    torch_sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=final),
    ], milestones=[warmup])
    reference = []
    for _ in range(total):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    ours = [warmup_cosine(s, total, warmup, base, final, warmup_start=0.1 * base) for s in range(total)]
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(reference), rtol=1e-9, atol=1e-12)


def test_ema_momentum_closed_form() -> None:
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == pytest.approx(1.0)
    assert ema_momentum(25, 100, base=0.99) == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi / 4)) / 2)
    assert {ema_momentum(s, 100, base=0.999, final=0.999) for s in (0, 37, 100)} == {0.999}  # MoCo-v2
    with pytest.raises(ValueError, match="base=1.5"):
        ema_momentum(0, 10, base=1.5)


def test_stepwise_lr_respects_multipliers_and_resumes() -> None:
    model = _net()
    opt = build_optimizer("sgd", param_groups(model, 1e-4, lr_multipliers={"predictor": 0.5}), lr=1.0)
    schedule = partial(warmup_cosine, total_steps=20, warmup_steps=4, base_lr=1.0)
    sched = StepwiseLR(opt, schedule)
    assert sched.get_last_lr() == [0.0] * len(opt.param_groups)  # warm-up starts at 0
    for _ in range(7):
        sched.step()
    expected = [schedule(7) * g["lr_multiplier"] for g in opt.param_groups]
    assert sched.get_last_lr() == pytest.approx(expected) and min(expected) < max(expected)
    other = StepwiseLR(build_optimizer("sgd", param_groups(model, 1e-4, lr_multipliers={"predictor": 0.5}),
                                       lr=1.0), schedule)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == sched.get_last_lr()


def test_fixed_lr_groups_keep_their_lr_while_others_follow_the_schedule():
    """SimSiam's predictor: a group flagged fixed_lr keeps its starting lr through warm-up and decay."""
    from cassle.core.schedules import FIXED_LR, StepwiseLR

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], FIXED_LR: True}], lr=0.5)
    scheduler = StepwiseLR(optimizer, lambda step: 0.5 * (1 - step / 4))
    seen = []
    for _ in range(4):
        scheduler.step()
        seen.append(scheduler.get_last_lr())
    assert [lr for lr, _ in seen] == pytest.approx([0.375, 0.25, 0.125, 0.0])
    assert all(fixed == 0.5 for _, fixed in seen)
