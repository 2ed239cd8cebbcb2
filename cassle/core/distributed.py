"""Distributed helpers: rank/world queries, differentiable collectives, process-group setup, SyncBatchNorm.

Gradient convention (why DDP training with these collectives is exact)
----------------------------------------------------------------------
Every collective here is the identity when the process group is not initialised or has one rank.
The differentiable collectives (`all_gather_with_grad`, `all_reduce_sum_with_grad`) SUM gradients over
ranks in backward: each rank back-propagates its own copy of the loss, so rank r receives
d(sum_s L_s)/dx_r for its local input x_r. DistributedDataParallel then AVERAGES parameter gradients,
which divides by the world size W. Hence the parameter gradient after DDP is d(mean_s L_s)/dtheta:
- a loss that every rank computes identically from gathered / reduced data (the global-batch loss L)
  gets exactly dL/dtheta;
- a loss that is a per-rank mean over equally sized local batches gets the gradient of the mean over
  ranks, which is again the global-batch loss.
The gathers require the same batch size on every rank (DistributedSampler with drop_last=True).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBatchNormFunction

__all__ = [
    "DistributedContext",
    "SyncBatchNorm",
    "SyncBatchNorm1d",
    "SyncBatchNorm2d",
    "SyncBatchNorm3d",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_reduce_sum_with_grad",
    "convert_sync_batchnorm",
    "global_moments",
    "init_from_env",
    "is_distributed",
    "mean_over_ranks",
    "rank",
    "world_size",
]


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Global rank of this process (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return world_size() > 1


def _gather(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _reduce_sum(x: Tensor) -> Tensor:
    out = x.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _AllGather(torch.autograd.Function):
    """Concatenate over ranks; backward sums the incoming gradients over ranks and keeps this rank's rows."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        ctx.rows = x.shape[0]
        return _gather(x)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        return _reduce_sum(grad).narrow(0, rank() * ctx.rows, ctx.rows)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward sums the incoming gradients over ranks."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        return _reduce_sum(x)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        return _reduce_sum(grad)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenation of `x` over ranks along dim 0 (rank order), differentiable; identity when not distributed."""
    return _AllGather.apply(x) if is_distributed() else x


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenation of `x.detach()` over ranks along dim 0 (rank order); `x.detach()` when not distributed."""
    x = x.detach()
    return _gather(x) if is_distributed() else x


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of `x` over the ranks (no gradient), `x` itself without a process group: e.g. the loss of the global
    batch from each rank's loss of its equal share."""
    if not is_distributed():
        return x
    return _reduce_sum(x) / world_size()


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Element-wise sum of `x` over ranks, differentiable; identity when not distributed."""
    return _AllReduceSum.apply(x) if is_distributed() else x


def global_moments(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and element count of `x` over `dims`, taken over the batch of all ranks.

    One differentiable all_reduce of the stacked [sum, sum of squares, count]; the count may differ per rank.
    Accumulates in at least float32, so half-precision inputs give float32 statistics.
    """
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
    stats = all_reduce_sum_with_grad(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    channels = x.shape[1]
    total, total_sq, count = stats[:channels], stats[channels : 2 * channels], stats[-1]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    return mean, var, count


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


@dataclass(frozen=True)
class _LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    init_method: str


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; torchrun sets it to one") from None


def _launch_env() -> _LaunchEnv:
    """Rank layout from torchrun's variables, else from submitit's job environment, else a single process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
        return _LaunchEnv(_env_int("RANK"), _env_int("WORLD_SIZE"), local_rank, "env://")
    if "SUBMITIT_EXECUTOR" in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        job = TorchDistributedEnvironment()  # master = first host of the job, port seeded by the job id
        address = f"tcp://{job.master_addr}:{job.master_port}"
        return _LaunchEnv(job.rank, job.world_size, job.local_rank, address)
    return _LaunchEnv(0, 1, 0, "")


def init_from_env(device: str | None = None) -> DistributedContext:
    """Initialise the default process group from torchrun or submitit variables (NCCL on CUDA, gloo on CPU).

    A no-op returning rank 0 of 1 when the job has a single process or the group already exists.
    `device` "cpu" or "cuda" forces the kind; by default `cuda:<local_rank>` (made current) when CUDA is
    available, else the CPU.
    """
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be None (auto), 'cpu' or 'cuda', got {device!r}")
    env = _launch_env()
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise ValueError(
            f"invalid rank layout: rank={env.rank}, world_size={env.world_size}; need 0 <= rank < world_size"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; pass device='cpu' or None")
    if device == "cuda" or (device is None and torch.cuda.is_available()):
        target = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(target)
    else:
        target = torch.device("cpu")
    if env.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if target.type == "cuda" else "gloo",
            init_method=env.init_method,
            rank=env.rank,
            world_size=env.world_size,
        )
    return DistributedContext(env.rank, env.world_size, env.local_rank, target)


class SyncBatchNorm:
    """Mixin that makes a BatchNorm layer normalise with the statistics of the global batch, on any device.

    Distributed and training: on CUDA torch.nn.SyncBatchNorm's autograd function; elsewhere (CPU/gloo) a
    differentiable all_reduce of per-channel [sum, sum of squares, count] (`global_moments`), normalisation
    with the biased global variance and running statistics updated with the unbiased one, as torch does.
    Otherwise (eval, one rank) the layer is the plain BatchNorm it derives from. The concrete classes keep
    the BatchNorm base (isinstance, input checks, state-dict keys) and are not torch.nn.SyncBatchNorm, which
    DistributedDataParallel refuses on CPU.
    """

    def forward(self: _SyncBatchNormLayer, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        factor = self._running_stats_factor()
        if input.is_cuda:
            running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
            return _TorchSyncBatchNormFunction.apply(
                input, self.weight, self.bias, *running, self.eps, factor, dist.group.WORLD, world_size()
            )
        dims = [0, *range(2, input.dim())]
        mean, var, count = global_moments(input, dims)
        if count.item() <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got input size {input.shape}")
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * (count / (count - 1))).to(self.running_var.dtype), factor)
        shape = [1, -1] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out.to(input.dtype)

    def _running_stats_factor(self: _SyncBatchNormLayer) -> float:
        """Count this batch and return the running-average weight, exactly as torch's _BatchNorm does."""
        if not self.track_running_stats:
            return 0.0
        self.num_batches_tracked.add_(1)
        return 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum


class SyncBatchNorm1d(SyncBatchNorm, nn.BatchNorm1d):
    """BatchNorm1d with global-batch statistics under torch.distributed (see `SyncBatchNorm`)."""


class SyncBatchNorm2d(SyncBatchNorm, nn.BatchNorm2d):
    """BatchNorm2d with global-batch statistics under torch.distributed (see `SyncBatchNorm`)."""


class SyncBatchNorm3d(SyncBatchNorm, nn.BatchNorm3d):
    """BatchNorm3d with global-batch statistics under torch.distributed (see `SyncBatchNorm`)."""


_SyncBatchNormLayer = SyncBatchNorm1d | SyncBatchNorm2d | SyncBatchNorm3d
_SYNC_CLASS: dict[type[nn.Module], type[nn.modules.batchnorm._BatchNorm]] = {
    nn.BatchNorm1d: SyncBatchNorm1d,
    nn.BatchNorm2d: SyncBatchNorm2d,
    nn.BatchNorm3d: SyncBatchNorm3d,
}


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` (or `module` itself) by its SyncBatchNorm* twin.

    The twin shares the original's parameter and buffer objects (same values, device, dtype) and
    training flag; returns the converted module (the input's children are replaced in place).
    """
    sync_class = _SYNC_CLASS.get(type(module))
    if sync_class is not None:
        converted = sync_class(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            bias=module.bias is not None,
        )
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(converted, name, tensor)
        return converted.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module
