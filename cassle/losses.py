"""Self-supervised losses as pure functions: embeddings in, scalar loss out.

These implement the original methods, not the quirks of the CASSLE authors' code (see docs):
MoCo-v2 keys and queue are constants, SimCLR takes its negatives from the global batch, Barlow Twins
standardises with global-batch statistics.

Under DistributedDataParallel each function is called on the rank's local batch (the same size on
every rank). What it returns is either
- GLOBAL: the loss of the whole global batch, identical on every rank (`nt_xent`, `barlow_twins`), or
- LOCAL: the mean over this rank's samples (`infonce`, `contrastive_in_batch`, `negative_cosine`,
  `byol_loss`); the mean over ranks is then the global-batch loss (for `infonce` without a queue, whose
  negatives are the rank's own keys, the mean of the per-rank losses is the objective).
In every case the parameter gradients after DDP's averaging equal those of that objective computed in
one process (see `cassle.core.distributed` for why the differentiable collectives make this exact).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cassle.core.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_sum_with_grad,
    global_moments,
    rank,
    world_size,
)

__all__ = ["barlow_twins", "byol_loss", "contrastive_in_batch", "infonce", "negative_cosine", "nt_xent"]

_BN_EPS = 1e-5  # BatchNorm1d's default eps, used by Barlow Twins' affine-free BN


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Both must be 2-D (batch x dim) with the same shape."""
    for name, t in ((name_a, a), (name_b, b)):
        if t.dim() != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D tensor (batch x dim), got shape {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def infonce(q: Tensor, k: Tensor, queue: Tensor | None = None, temperature: float = 0.2) -> Tensor:
    """MoCo-v2 InfoNCE: mean over the N queries of CE over [q_i.k_i, negatives] / temperature.

    q, k: N x D, L2-normalised here; k is a constant (momentum encoder: no gradient flows into it).
    queue: K x D negatives, already normalised, used as constants. Without a queue the negatives of q_i
    are the other keys of the batch, k_j (j != i).
    LOCAL under DDP: as in MoCo, keys are per-rank and only the queue is shared.
    """
    _check_pair("q", q, "k", k)
    _check_positive("temperature", temperature)
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    if queue is None:
        logits = q @ k.T
        labels = torch.arange(q.shape[0], device=q.device)
    else:
        if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
            raise ValueError(f"queue must have shape (K, {q.shape[1]}) to match q, got {tuple(queue.shape)}")
        positives = (q * k).sum(dim=1, keepdim=True)
        logits = torch.cat([positives, q @ queue.detach().T.to(q.dtype)], dim=1)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, labels)


def contrastive_in_batch(q: Tensor, k: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo-v3 loss: CE over q_i . all_gather(k) / temperature, positive k_i, times 2 * temperature.

    q, k: N x D local batches, L2-normalised here; keys are gathered without gradient (momentum encoder).
    LOCAL under DDP: the mean over this rank's queries, each contrasted with the keys of the global batch.
    """
    _check_pair("q", q, "k", k)
    _check_positive("temperature", temperature)
    q = F.normalize(q, dim=1)
    keys = F.normalize(all_gather_no_grad(k), dim=1)
    labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
    return F.cross_entropy(q @ keys.T / temperature, labels) * (2 * temperature)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2, global_negatives: bool = True) -> Tensor:
    """SimCLR's NT-Xent over the global batch of 2 * N_global samples (L2-normalised here).

    Each sample's positive is the other view of the same image; its negatives are all the other
    2 * N_global - 2 samples of every rank; the loss is the mean over all 2 * N_global anchors.
    GLOBAL under DDP: each rank scores its own anchors against the batch gathered with gradient, and
    the per-rank means are averaged with a differentiable all_reduce.
    `global_negatives=False` is the CASSLE authors' variant: negatives from this rank's batch only (LOCAL).
    """
    _check_pair("z1", z1, "z2", z2)
    _check_positive("temperature", temperature)
    n = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]), dim=1)  # rows: view 1 then view 2 of this rank
    offset = rank() * 2 * n if global_negatives else 0
    everyone = all_gather_with_grad(local) if global_negatives else local  # rank-major blocks of 2n rows
    anchors = torch.arange(2 * n, device=local.device)
    own_rows = anchors + offset
    positives = (anchors + n) % (2 * n) + offset
    is_self = own_rows[:, None] == torch.arange(everyone.shape[0], device=local.device)
    logits = (local @ everyone.T / temperature).masked_fill(is_self, -math.inf)
    loss = F.cross_entropy(logits, positives)
    return all_reduce_sum_with_grad(loss) / world_size() if global_negatives else loss


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 0.0051, normalize: bool = True) -> Tensor:
    """Barlow Twins: sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2, c = z1n^T z2n / N_global.

    normalize=True standardises each dimension over the global batch (mean 0, biased std 1, eps 1e-5:
    the original's affine-free BatchNorm, synchronised); use normalize=False when the projector already
    ends in a (Sync)BatchNorm. c is summed over ranks with a differentiable all_reduce.
    GLOBAL under DDP.
    """
    _check_pair("z1", z1, "z2", z2)
    if not (math.isfinite(lambd) and lambd >= 0):
        raise ValueError(f"lambd must be a finite number >= 0, got {lambd!r}")
    if normalize:
        z1, z2 = (_standardize_global(z) for z in (z1, z2))
    c = all_reduce_sum_with_grad(z1.T @ z2) / (z1.shape[0] * world_size())
    on_diag = torch.diagonal(c)
    off_diag = c - torch.diag(on_diag)
    return (1 - on_diag).pow(2).sum() + lambd * off_diag.pow(2).sum()


def _standardize_global(z: Tensor) -> Tensor:
    mean, var, _ = global_moments(z, [0])
    return (z - mean) * torch.rsqrt(var + _BN_EPS)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """-mean_i cos(p_i, stop_grad(z_i)): the SimSiam / BYOL building block. LOCAL under DDP."""
    _check_pair("p", p, "z", z)
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's mean_i (2 - 2 cos(p_i, stop_grad(z_i))): the squared distance of the unit vectors. LOCAL under DDP."""
    return 2 + 2 * negative_cosine(p, z)
