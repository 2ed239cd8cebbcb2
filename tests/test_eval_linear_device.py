"""The linear protocol on a device: the whole sweep stays where the features are (no host round trip of a tensor,
checked on the CPU by intercepting every tensor method), and on a GPU it reaches the CPU sweep's minima.

No scikit-learn here (the lent GPU machines lack it): the CPU sweep is the reference, itself checked against
scikit-learn's minimum in tests/test_eval_linear.py; objectives are written out in float64."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from cassle.evaluate.linear import PENALTIES, LinearModel, SolverSettings, linear_probe

GRID = PENALTIES[::4]
HOST_COPIES = {"cpu", "numpy", "tolist"}

RTOL = 10 * SolverSettings().tolerance  # each sweep stops within about the tolerance of the minimum


def relu_splits(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Non-negative, correlated features of 12 Gaussian classes through a random ReLU layer; 300 / 120 / 180 rows."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, 32, generator=generator) * 1.5
    y = torch.randint(0, 12, (600,), generator=generator)
    latent = centres[y] + torch.randn(600, 32, generator=generator)
    x = (latent @ torch.randn(32, 64, generator=generator) / 32**0.5 + 0.5).clamp_min(0)
    return [{"x": x[a:b], "y": y[a:b]} for a, b in ((0, 300), (300, 420), (420, 600))]


def objective(x: torch.Tensor, y: torch.Tensor, model: LinearModel, penalty: float) -> float:
    """sum_i CE(W x_i + b, y_i) + w ||W||^2 in float64 on the CPU (labels 0..C-1, all present)."""
    weight, bias = model.weight.cpu().double(), model.bias.cpu().double()
    logits = x.double() @ weight.T + bias
    return float(-logits.log_softmax(1).gather(1, y[:, None]).sum() + penalty * weight.square().sum())


class HostCopies(TorchFunctionMode):
    """Records every call of a tensor method that copies a tensor to the host (`.cpu()`, `.numpy()`, `.tolist()`,
    `.to("cpu")`) except on the `inputs` (moved to the device once); scalars read by `float()` / `.item()` (the
    objective, a score) are not copies of data."""

    def __init__(self, inputs: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self.inputs = inputs
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        to_host = name == "to" and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device")))
        if (name in HOST_COPIES or to_host) and not any(args[0] is t for t in self.inputs):
            self.calls.append(name)
        return func(*args, **kwargs)


@pytest.fixture
def one_thread():
    """Every op goes through the interceptor: small ops, many of them, on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_sweep_makes_no_host_copy(one_thread) -> None:
    """The code path of `--device cuda`, run on the CPU: selection, refit and test without `.cpu()`/numpy."""
    splits = relu_splits()
    with HostCopies(tuple(t for split in splits for t in split.values())) as copies:
        result = linear_probe(*splits, metric="top1", penalties=PENALTIES[8::12], progress=False, return_models=True)
    assert copies.calls == [], f"host copies in the sweep: {copies.calls}"
    assert result["final"].weight.device.type == "cpu" and result["test"] > 0.3


def test_the_interceptor_sees_host_copies() -> None:
    """The check above can fail: a `.cpu()`, a `.numpy()` and a `.to("cpu")` are each recorded."""
    with HostCopies() as copies:
        t = torch.ones(3)
        t.cpu()
        t.numpy()
        t.to("cpu")
    assert copies.calls == ["cpu", "numpy", "to"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sweep_reaches_the_cpu_minima() -> None:
    """The whole protocol on the GPU: every fit and the refit at the CPU sweep's minimum, models on the GPU."""
    train, val, test = relu_splits()
    on_cpu = linear_probe(train, val, test, metric="top1", penalties=GRID, progress=False, return_models=True)
    result = linear_probe(train, val, test, metric="top1", penalties=GRID, device="cuda", progress=False,
                          return_models=True)
    assert result["device"].startswith("cuda") and result["final"].weight.device.type == "cuda"
    for penalty, model, reference in zip(result["penalties"], result["models"], on_cpu["models"]):
        minimum = objective(train["x"], train["y"], reference, penalty)
        assert objective(train["x"], train["y"], model, penalty) <= minimum * (1 + RTOL), penalty
    if result["penalty"] == on_cpu["penalty"]:
        trainval = {k: torch.cat([train[k], val[k]]) for k in ("x", "y")}
        minimum = objective(trainval["x"], trainval["y"], on_cpu["final"], on_cpu["penalty"])
        assert objective(trainval["x"], trainval["y"], result["final"], result["penalty"]) <= minimum * (1 + RTOL)
