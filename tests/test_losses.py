"""SSL losses: against hand-written float64 references, and under 2-rank gloo DDP against one process."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from cassle.core.distributed import rank, world_size
from cassle.losses import barlow_twins, byol_loss, contrastive_in_batch, infonce, negative_cosine, nt_xent

from ddp import run_distributed

# ---------------------------------------------------------------- hand-written references (numpy, float64, loops)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], with the log-sum-exp written out."""
    top = max(logits)
    return -(logits[target] - top - np.log(sum(np.exp(v - top) for v in logits)))


def ref_infonce(q: np.ndarray, k: np.ndarray, queue: np.ndarray | None, t: float) -> float:
    q, k = _unit(q), _unit(k)
    losses = []
    for i in range(len(q)):
        negatives = [k[j] for j in range(len(k)) if j != i] if queue is None else list(queue)
        losses.append(_ce([q[i] @ k[i] / t] + [q[i] @ n / t for n in negatives], 0))
    return float(np.mean(losses))


def ref_contrastive_in_batch(q: np.ndarray, k: np.ndarray, t: float) -> float:
    q, k = _unit(q), _unit(k)
    return float(2 * t * np.mean([_ce([q[i] @ k[j] / t for j in range(len(k))], i) for i in range(len(q))]))


def ref_nt_xent(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    z = _unit(np.concatenate([z1, z2]))
    n = len(z1)
    losses = []
    for i in range(2 * n):
        others = [j for j in range(2 * n) if j != i]
        positive = others.index((i + n) % (2 * n))
        losses.append(_ce([z[i] @ z[j] / t for j in others], positive))
    return float(np.mean(losses))


def ref_barlow(z1: np.ndarray, z2: np.ndarray, lambd: float, normalize: bool) -> float:
    if normalize:  # BatchNorm1d(affine=False) in training mode: biased variance, eps 1e-5
        z1, z2 = ((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) for z in (z1, z2))
    n, d = z1.shape
    c = [[sum(z1[b, i] * z2[b, j] for b in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lambd * off


def ref_cosines(p: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.array([p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(len(p))])


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _np(*tensors: Tensor) -> list[np.ndarray]:
    return [t.detach().numpy() for t in tensors]


# ---------------------------------------------------------------- single process vs references


@pytest.mark.parametrize("temperature", [0.2, 0.07, 1.5])
@pytest.mark.parametrize("queue_size", [None, 11])
def test_infonce_matches_reference(temperature: float, queue_size: int | None) -> None:
    q, k = _randn(6, 5, seed=1), _randn(6, 5, seed=2)
    queue = None if queue_size is None else F.normalize(_randn(queue_size, 5, seed=3), dim=1)
    expected = ref_infonce(*_np(q, k), None if queue is None else queue.numpy(), temperature)
    assert infonce(q, k, queue, temperature).item() == pytest.approx(expected, rel=1e-10)
    assert infonce(q, k, queue, temperature).item() != pytest.approx(infonce(k, q, queue, temperature).item())


@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_contrastive_in_batch_matches_reference(temperature: float) -> None:
    q, k = _randn(7, 4, seed=4), _randn(7, 4, seed=5)
    expected = ref_contrastive_in_batch(*_np(q, k), temperature)
    assert contrastive_in_batch(q, k, temperature).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("temperature", [0.2, 0.1, 0.9])
def test_nt_xent_matches_reference_and_is_symmetric(temperature: float) -> None:
    z1, z2 = _randn(5, 6, seed=6), _randn(5, 6, seed=7)
    expected = ref_nt_xent(*_np(z1, z2), temperature)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(expected, rel=1e-10)
    assert nt_xent(z2, z1, temperature).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("lambd", [0.0051, 0.2, 0.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_barlow_twins_matches_reference(lambd: float, normalize: bool) -> None:
    z1, z2 = 3 * _randn(9, 4, seed=8) + 1, _randn(9, 4, seed=9) - 2
    expected = ref_barlow(*_np(z1, z2), lambd, normalize)
    assert barlow_twins(z1, z2, lambd, normalize).item() == pytest.approx(expected, rel=1e-10)
    assert barlow_twins(z2, z1, lambd, normalize).item() == pytest.approx(expected, rel=1e-10)


def test_barlow_twins_normalize_equals_affine_free_batchnorm() -> None:
    z1, z2 = _randn(8, 3, seed=10) * 4, _randn(8, 3, seed=11) + 5
    bn = nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    assert barlow_twins(z1, z2).item() == pytest.approx(barlow_twins(bn(z1), bn(z2), normalize=False).item())


def test_barlow_twins_of_identical_decorrelated_views_is_zero() -> None:
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins(z, z, lambd=0.3, normalize=False).item() == pytest.approx(0.0, abs=1e-12)


def test_cosine_losses_match_reference_and_stop_gradient() -> None:
    p, z = _randn(6, 5, seed=12).requires_grad_(), _randn(6, 5, seed=13).requires_grad_()
    cosines = ref_cosines(*_np(p, z))
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(-cosines.mean(), rel=1e-10)
    assert byol_loss(p, z).item() == pytest.approx(np.mean(2 - 2 * cosines), rel=1e-10)
    loss.backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize(
    "loss",
    [lambda q, k: infonce(q, k, F.normalize(_randn(4, 3, seed=14), dim=1)), contrastive_in_batch],
    ids=["infonce", "contrastive_in_batch"],
)
def test_moco_keys_get_no_gradient(loss: Callable[[Tensor, Tensor], Tensor]) -> None:
    q, k = _randn(5, 3, seed=15).requires_grad_(), _randn(5, 3, seed=16).requires_grad_()
    loss(q, k).backward()
    assert k.grad is None and q.grad.abs().sum() > 0


def test_contrastive_losses_are_scale_invariant() -> None:
    a, b = _randn(4, 3, seed=17), _randn(4, 3, seed=18)
    for loss in (infonce, contrastive_in_batch, nt_xent, negative_cosine):
        assert loss(7 * a, 0.1 * b).item() == pytest.approx(loss(a, b).item(), rel=1e-10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nt_xent(torch.randn(4, 3), torch.randn(5, 3)), "same shape"),
        (lambda: infonce(torch.randn(4), torch.randn(4)), "2-D"),
        (lambda: nt_xent(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0), "temperature"),
        (lambda: contrastive_in_batch(torch.randn(4, 3), torch.randn(4, 3), float("nan")), "temperature"),
        (lambda: infonce(torch.randn(4, 3), torch.randn(4, 3), torch.randn(6, 2)), r"queue must have shape \(K, 3\)"),
        (lambda: barlow_twins(torch.randn(4, 3), torch.randn(4, 3), lambd=-1.0), "lambd"),
        (lambda: negative_cosine(torch.randn(0, 3), torch.randn(0, 3)), "non-empty"),
    ],
)
def test_bad_input_raises_a_clear_error(call: Callable[[], Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- 2-rank DDP vs one process on the global batch

GLOBAL_BATCH, IN_DIM, EMBED_DIM, QUEUE_SIZE = 8, 5, 4, 6

# name -> (loss(z1, z2, queue), scope). scope "global": every rank returns the global-batch loss;
# "local": each rank returns the loss of its own half (per-sample terms, or in-batch negatives);
# "queries": each rank's queries against the gathered keys, the mean over ranks being the global loss.
CASES: dict[str, tuple[Callable[[Tensor, Tensor, Tensor], Tensor], str]] = {
    "nt_xent": (lambda z1, z2, queue: nt_xent(z1, z2, temperature=0.3), "global"),
    "barlow_twins": (lambda z1, z2, queue: barlow_twins(z1, z2, lambd=0.02), "global"),
    "barlow_twins_prenormalized": (lambda z1, z2, queue: barlow_twins(z1, z2, 0.05, normalize=False), "global"),
    "contrastive_in_batch": (lambda z1, z2, queue: contrastive_in_batch(z1, z2, 0.4), "queries"),
    "contrastive_in_batch_symmetric": (
        lambda z1, z2, queue: contrastive_in_batch(z1, z2, 0.2) + contrastive_in_batch(z2, z1, 0.2),
        "queries",
    ),
    "infonce_queue": (lambda z1, z2, queue: infonce(z1, z2, queue, temperature=0.25), "local"),
    "infonce_in_batch": (lambda z1, z2, queue: infonce(z1, z2, temperature=0.25), "local"),
    "negative_cosine": (lambda z1, z2, queue: negative_cosine(z1, z2) + negative_cosine(z2, z1), "local"),
    "byol_loss": (lambda z1, z2, queue: byol_loss(z1, z2), "local"),
}


def _data() -> tuple[Tensor, Tensor, Tensor]:
    """Two views of the global batch and a MoCo queue, the same in every process."""
    queue = F.normalize(_randn(QUEUE_SIZE, EMBED_DIM, seed=22), dim=1)
    return _randn(GLOBAL_BATCH, IN_DIM, seed=20), _randn(GLOBAL_BATCH, IN_DIM, seed=21), queue


def _layer() -> nn.Linear:
    torch.manual_seed(23)
    return nn.Linear(IN_DIM, EMBED_DIM, dtype=torch.float64)


def _loss_and_grads(model: nn.Module, layer: nn.Linear, x1: Tensor, x2: Tensor, name: str) -> tuple[Tensor, ...]:
    """Embed both views with one call, evaluate the loss, back-propagate; (loss, weight grad, bias grad)."""
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = CASES[name][0](z1, z2, _data()[2])
    loss.backward()
    return loss.detach(), layer.weight.grad, layer.bias.grad


def _all_cases_under_ddp() -> dict[str, tuple[Tensor, ...]]:
    x1, x2, _ = _data()
    half = slice(rank() * GLOBAL_BATCH // world_size(), (rank() + 1) * GLOBAL_BATCH // world_size())
    results = {}
    for name in CASES:
        layer = _layer()
        results[name] = _loss_and_grads(DistributedDataParallel(layer), layer, x1[half], x2[half], name)
    return results


def _one_process(name: str, chunks: int) -> tuple[Tensor, ...]:
    """In one process: the loss of each of `chunks` equal parts of the global batch, and the gradients
    (weight, bias) of their mean."""
    layer = _layer()
    x1, x2, _ = _data()
    losses = [_loss_and_grads(layer, layer, a, b, name)[0] for a, b in zip(x1.chunk(chunks), x2.chunk(chunks))]
    return torch.stack(losses), layer.weight.grad / chunks, layer.bias.grad / chunks


@pytest.fixture(scope="module")
def ddp_results() -> list[dict[str, tuple[Tensor, ...]]]:
    return run_distributed(_all_cases_under_ddp, world_size=2)


@pytest.mark.parametrize("name", list(CASES))
def test_ddp_loss_and_gradients_equal_one_process_on_the_global_batch(
    ddp_results: list[dict[str, tuple[Tensor, ...]]], name: str
) -> None:
    scope = CASES[name][1]
    losses = torch.stack([result[name][0] for result in ddp_results])
    expected_losses, *expected_grads = _one_process(name, chunks=2 if scope == "local" else 1)
    if scope == "global":
        torch.testing.assert_close(losses, expected_losses.expand(2), rtol=1e-10, atol=0)
    elif scope == "local":
        torch.testing.assert_close(losses, expected_losses, rtol=1e-10, atol=0)
    else:
        torch.testing.assert_close(losses.mean(), expected_losses[0], rtol=1e-10, atol=0)
    for result in ddp_results:  # DDP leaves the same averaged gradients on every rank
        for ddp_grad, expected in zip(result[name][1:], expected_grads, strict=True):
            torch.testing.assert_close(ddp_grad, expected, rtol=1e-9, atol=1e-12)


def _nt_xent_local_negatives(z1: Tensor, z2: Tensor) -> float:
    half = z1.shape[0] // world_size()
    part = slice(rank() * half, (rank() + 1) * half)
    return nt_xent(z1[part], z2[part], 0.2, global_negatives=False).item()


def test_nt_xent_with_local_negatives_uses_each_ranks_batch_only() -> None:
    """The CASSLE authors' SimCLR (compat=authors): each rank contrasts only against its own batch."""
    z1, z2 = _randn(8, 6, seed=20), _randn(8, 6, seed=21)
    per_rank = run_distributed(_nt_xent_local_negatives, z1, z2)
    for r, value in enumerate(per_rank):
        part = slice(4 * r, 4 * (r + 1))
        assert value == pytest.approx(ref_nt_xent(*_np(z1[part], z2[part]), 0.2), rel=1e-8)
    assert np.mean(per_rank) != pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-3)
