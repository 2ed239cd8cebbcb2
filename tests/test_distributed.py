"""Distributed primitives, process-group start-up and SyncBatchNorm: one process and 2-rank gloo on CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torchvision
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from cassle.core.distributed import (
    DistributedContext,
    SyncBatchNorm,
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_sum_with_grad,
    convert_sync_batchnorm,
    global_moments,
    init_from_env,
    is_distributed,
    mean_over_ranks,
    rank,
    world_size,
)

from ddp import run_distributed

WORLD = 2


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rank_input(r: int) -> Tensor:
    """Rank r's local tensor for the collective tests (rank 1 has more rows, for the moments)."""
    return _randn(3 + 2 * r, 4, 2, seed=r)


# ---------------------------------------------------------------- collectives, 2 ranks


def _collectives_on_each_rank() -> dict[str, object]:
    r = rank()
    x = _randn(3, 2, seed=r).requires_grad_()
    gathered = all_gather_with_grad(x)
    (gathered * _randn(3 * WORLD, 2, seed=10 + r)).sum().backward()  # each rank weighs the gather differently
    gather_grad = x.grad

    x = _randn(3, 2, seed=r).requires_grad_()
    reduced = all_reduce_sum_with_grad(2 * x)
    (reduced * _randn(3, 2, seed=20 + r)).sum().backward()
    reduce_grad = x.grad

    y = _rank_input(r).requires_grad_()
    mean, var, count = global_moments(y, [0, 2])
    ((mean * _randn(4, seed=30 + r)).sum() + (var * _randn(4, seed=40 + r)).sum()).backward()
    return {
        "layout": (rank(), world_size(), is_distributed(), init_from_env(device="cpu")),
        "gathered": gathered.detach(),
        "gather_grad": gather_grad,
        "gathered_no_grad": all_gather_no_grad(x * 1),
        "reduced": reduced.detach(),
        "reduce_grad": reduce_grad,
        "moments": (mean.detach(), var.detach(), count),
        "moments_grad": y.grad,
        "mean": mean_over_ranks(_randn(5, seed=50 + r)),
    }


@pytest.fixture(scope="module")
def collectives() -> list[dict[str, object]]:
    return run_distributed(_collectives_on_each_rank, world_size=WORLD)


def test_rank_layout_under_two_processes(collectives: list[dict[str, object]]) -> None:
    for r, result in enumerate(collectives):
        assert result["layout"] == (r, WORLD, True, DistributedContext(r, WORLD, r, torch.device("cpu")))


def test_all_gather_concatenates_in_rank_order_and_sums_gradients_over_ranks(
    collectives: list[dict[str, object]],
) -> None:
    expected = torch.cat([_randn(3, 2, seed=r) for r in range(WORLD)])
    # every rank's loss weighs the gathered rows; rank s's rows receive the sum of all ranks' weights
    weights = sum(_randn(3 * WORLD, 2, seed=10 + r) for r in range(WORLD))
    for s, result in enumerate(collectives):
        torch.testing.assert_close(result["gathered"], expected)
        torch.testing.assert_close(result["gather_grad"], weights[3 * s : 3 * s + 3])
        assert not result["gathered_no_grad"].requires_grad
        torch.testing.assert_close(result["gathered_no_grad"], expected)


def test_mean_over_ranks_is_the_same_mean_on_every_rank(collectives: list[dict[str, object]]) -> None:
    expected = sum(_randn(5, seed=50 + r) for r in range(WORLD)) / WORLD
    for result in collectives:
        torch.testing.assert_close(result["mean"], expected)
    single = _randn(5, seed=1)
    assert mean_over_ranks(single) is single  # without a process group: the value itself


def test_all_reduce_sums_values_and_gradients_over_ranks(collectives: list[dict[str, object]]) -> None:
    expected = 2 * sum(_randn(3, 2, seed=r) for r in range(WORLD))
    weights = sum(_randn(3, 2, seed=20 + r) for r in range(WORLD))
    for result in collectives:
        torch.testing.assert_close(result["reduced"], expected)
        torch.testing.assert_close(result["reduce_grad"], 2 * weights)


def test_global_moments_over_unequal_batches_match_the_concatenation(collectives: list[dict[str, object]]) -> None:
    inputs = [_rank_input(r).requires_grad_() for r in range(WORLD)]
    both = torch.cat(inputs)
    var, mean = torch.var_mean(both, dim=(0, 2), correction=0)
    sum(
        (mean * _randn(4, seed=30 + r)).sum() + (var * _randn(4, seed=40 + r)).sum() for r in range(WORLD)
    ).backward()  # the sum of the ranks' losses: what the collectives' backward computes
    for s, result in enumerate(collectives):
        torch.testing.assert_close(result["moments"][0], mean.detach())
        torch.testing.assert_close(result["moments"][1], var.detach())
        assert result["moments"][2].item() == both.numel() // 4
        torch.testing.assert_close(result["moments_grad"], inputs[s].grad)


def _fail_on_rank_one() -> None:
    if rank() == 1:
        raise RuntimeError("rank one failed on purpose")


def _hang_on_rank_zero() -> None:
    if rank() == 1:
        time.sleep(60)  # far longer than the test's timeout
    dist.barrier()


def test_harness_reports_a_failing_rank() -> None:
    with pytest.raises(Exception, match="rank one failed on purpose"):
        run_distributed(_fail_on_rank_one, world_size=WORLD)


def test_harness_kills_a_hung_job() -> None:
    with pytest.raises(TimeoutError, match="_hang_on_rank_zero did not finish on 2 ranks within 2"):
        run_distributed(_hang_on_rank_zero, world_size=WORLD, timeout=2)


# ---------------------------------------------------------------- collectives and start-up, one process


def test_collectives_are_identities_in_one_process() -> None:
    x = _randn(5, 3, seed=0).requires_grad_()
    assert (rank(), world_size(), is_distributed()) == (0, 1, False)
    assert all_gather_with_grad(x) is x
    assert all_reduce_sum_with_grad(x) is x
    gathered = all_gather_no_grad(x)
    assert not gathered.requires_grad and torch.equal(gathered, x.detach())
    mean, var, count = global_moments(x.view(5, 3, 1), [0, 2])
    torch.testing.assert_close(mean, x.detach().mean(0))
    torch.testing.assert_close(var.detach(), x.detach().var(0, correction=0))
    assert count.item() == 5


_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR")


@pytest.mark.parametrize("env", [{}, {"RANK": "0", "WORLD_SIZE": "1"}])
def test_init_from_env_is_a_no_op_for_one_process(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert init_from_env(device="cpu") == DistributedContext(0, 1, 0, torch.device("cpu"))
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("env", "device", "message"),
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, None, "rank=2, world_size=2"),
        ({"RANK": "zero", "WORLD_SIZE": "2"}, None, "RANK='zero'"),
        ({}, "tpu", "device must be"),
    ],
)
def test_init_from_env_rejects_bad_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], device: str | None, message: str
) -> None:
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        init_from_env(device=device)


def _slurm_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What a 2-task single-node Slurm job launched by submitit has in its environment."""
    return {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(world_size),
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_JOB_NODELIST": "localhost",
        "MASTER_PORT": str(port),
    }


def _layout_and_sum() -> tuple[DistributedContext, int, float]:
    total = torch.tensor([rank() + 1.0])
    dist.all_reduce(total)
    return init_from_env(device="cpu"), dist.get_world_size(), total.item()


def test_init_from_env_under_submitit_slurm() -> None:
    pytest.importorskip("submitit")
    results = run_distributed(_layout_and_sum, world_size=WORLD, env=_slurm_env)
    for r, result in enumerate(results):
        assert result == (DistributedContext(r, WORLD, r, torch.device("cpu")), WORLD, 3.0)


# ---------------------------------------------------------------- SyncBatchNorm

# name -> (builder of a layer followed by BatchNorm, input shape without the batch dimension)
BN_CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "bn1d": (lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)), (5,)),
    "bn1d_sequence_cumulative_no_affine": (
        lambda: nn.Sequential(nn.Conv1d(5, 4, 1), nn.BatchNorm1d(4, momentum=None, affine=False)),
        (5, 3),
    ),
    "bn2d": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3)), (3, 2, 3)),
}
GLOBAL_BATCH, STEPS = 6, 2


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return BN_CASES[name][0]().double()


def _batch(name: str, step: int) -> tuple[Tensor, Tensor]:
    """Input (mean 1, std 2) and the weights of the loss mean(out * weights) for one step of the global batch."""
    shape = BN_CASES[name][1]
    x = 2 * _randn(GLOBAL_BATCH, *shape, seed=100 + step) + 1
    return x, _randn(GLOBAL_BATCH, 4, *shape[1:], seed=200 + step)


def _train_and_eval(model: nn.Module, name: str, rows: slice) -> dict[str, object]:
    """STEPS training steps on `rows` of the global batch (outputs, parameter grads), then an eval pass."""
    params = [p for p in model.parameters()]
    outputs, grads = [], []
    for step in range(STEPS):
        x, weights = _batch(name, step)
        for p in params:
            p.grad = None
        out = model(x[rows])
        (out * weights[rows]).mean().backward()
        outputs.append(out.detach())
        grads.append([p.grad for p in params])
    model.eval()
    with torch.no_grad():
        evaluated = model(_batch(name, STEPS)[0][rows])
    return {"outputs": outputs, "grads": grads, "state": model.state_dict(), "eval": evaluated}


def _sync_bn_on_each_rank() -> dict[str, dict[str, object]]:
    rows = slice(rank() * GLOBAL_BATCH // WORLD, (rank() + 1) * GLOBAL_BATCH // WORLD)
    results = {}
    for name in BN_CASES:
        model = convert_sync_batchnorm(_build(name))
        ddp = DistributedDataParallel(model, broadcast_buffers=False)  # each rank must get the stats itself
        results[name] = _train_and_eval(ddp, name, rows)
        results[name]["state"] = model.state_dict()
    return results


@pytest.fixture(scope="module")
def sync_bn_results() -> list[dict[str, dict[str, object]]]:
    return run_distributed(_sync_bn_on_each_rank, world_size=WORLD)


def _assert_same_run(result: dict[str, object], expected: dict[str, object], rows: slice) -> None:
    for out, want in zip(result["outputs"], expected["outputs"], strict=True):
        torch.testing.assert_close(out, want[rows], rtol=1e-9, atol=1e-12)
    for step_grads, want_grads in zip(result["grads"], expected["grads"], strict=True):
        for grad, want in zip(step_grads, want_grads, strict=True):
            torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-12)
    assert list(result["state"]) == list(expected["state"])
    for key, value in expected["state"].items():
        torch.testing.assert_close(result["state"][key], value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result["eval"], expected["eval"][rows], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(BN_CASES))
def test_sync_bn_under_ddp_equals_plain_bn_on_the_global_batch(
    sync_bn_results: list[dict[str, dict[str, object]]], name: str
) -> None:
    expected = _train_and_eval(_build(name), name, slice(None))
    for r, result in enumerate(sync_bn_results):
        _assert_same_run(result[name], expected, slice(r * GLOBAL_BATCH // WORLD, (r + 1) * GLOBAL_BATCH // WORLD))


@pytest.mark.parametrize("name", list(BN_CASES))
def test_sync_bn_in_one_process_equals_plain_bn(name: str) -> None:
    converted = convert_sync_batchnorm(_build(name))
    assert any(isinstance(m, SyncBatchNorm) for m in converted.modules())
    everything = slice(None)
    expected = _train_and_eval(_build(name), name, everything)
    _assert_same_run(_train_and_eval(converted, name, everything), expected, everything)


def test_conversion_keeps_type_state_and_flags() -> None:
    plain = nn.BatchNorm2d(3, eps=1e-3, momentum=0.2, bias=False, dtype=torch.float64).eval()
    plain.running_mean.fill_(0.5)
    converted = convert_sync_batchnorm(plain)
    assert isinstance(converted, SyncBatchNorm) and isinstance(converted, nn.BatchNorm2d)
    assert not isinstance(converted, nn.SyncBatchNorm)  # DDP refuses torch's SyncBatchNorm on CPU
    assert converted.weight is plain.weight and converted.bias is None and converted.running_mean is plain.running_mean
    assert (converted.eps, converted.momentum, converted.training) == (1e-3, 0.2, False)
    with pytest.raises(ValueError, match="expected 4D input"):
        converted(torch.zeros(2, 3))


def test_converted_resnet_state_dict_loads_into_torchvision() -> None:
    model = convert_sync_batchnorm(torchvision.models.resnet18(num_classes=10))
    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == 20
    fresh = torchvision.models.resnet18(num_classes=10)
    assert list(model.state_dict()) == list(fresh.state_dict())
    fresh.load_state_dict(model.state_dict(), strict=True)
