"""Optimisers: parameter groups (bias/norm exclusion, lr multipliers) and a name-based factory (LARS: lars.py).

Parameter groups carry two extra keys that the rest of cassle reads:
``lr_multiplier`` (the group's lr is ``multiplier x`` the scheduled lr) and ``lars_adaptation``
(False for biases and norm parameters when they are excluded; only ``LARS`` reads it). Plain torch
optimisers keep such extra keys untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where an optimiser is built: the config checks names without it
    import torch
    from torch import nn

LR_MULTIPLIER = "lr_multiplier"
LARS_ADAPTATION = "lars_adaptation"
BIAS_AND_NORM = "bias_and_norm"
OPTIMIZERS = ("sgd", "lars", "adamw")


def is_bias_or_norm(param: torch.Tensor) -> bool:
    """Biases and norm-layer scales/shifts, recognised as parameters with at most one dimension."""
    return param.ndim <= 1


def _prefix_multiplier(name: str, multipliers: Mapping[str, float]) -> float:
    """Product of the multipliers whose key is ``name``'s module prefix (``"projector"`` matches
    ``"projector.0.weight"``)."""
    factor = 1.0
    for prefix, value in multipliers.items():
        if name == prefix or name.startswith(prefix + "."):
            factor *= value
    return factor


def param_groups(
    model: nn.Module,
    weight_decay: float,
    exclude_bias_and_norm: bool = True,
    lr_multipliers: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` split into optimiser groups.

    ``exclude_bias_and_norm``: biases and norm parameters (``is_bias_or_norm``) get no weight decay and
    no LARS adaptation. ``lr_multipliers`` maps a parameter-name prefix (``"predictor"``) or the key
    ``"bias_and_norm"`` to a factor on the lr; factors that apply together multiply. The authors'
    Barlow Twins setting is ``{"bias_and_norm": 0.024}`` with ``exclude_bias_and_norm=False``.
    Each group has a ``name`` (for logging), ``weight_decay``, ``lr_multiplier`` and ``lars_adaptation``.
    """
    multipliers = dict(lr_multipliers or {})
    names = [name for name, _ in model.named_parameters()]
    unknown = [key for key in multipliers if key != BIAS_AND_NORM and not any(
        n == key or n.startswith(key + ".") for n in names)]
    if unknown:
        raise ValueError(
            f"param_groups: lr_multipliers keys {unknown} match no parameter of the model; use "
            f"'{BIAS_AND_NORM}' or a module prefix such as {sorted({n.split('.')[0] for n in names})}"
        )
    bias_factor = multipliers.pop(BIAS_AND_NORM, 1.0)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        small = is_bias_or_norm(param)
        factor = _prefix_multiplier(name, multipliers) * (bias_factor if small else 1.0)
        excluded = small and exclude_bias_and_norm
        key = (excluded, factor)
        if key not in groups:
            label = "no_decay" if excluded else "decay"
            groups[key] = {"name": label if factor == 1.0 else f"{label}_x{factor:g}", "params": [],
                           "weight_decay": 0.0 if excluded else weight_decay,
                           LR_MULTIPLIER: factor, LARS_ADAPTATION: not excluded}
        groups[key]["params"].append(param)
    return list(groups.values())


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """Linear scaling rule: ``base_lr * batch_size / reference`` (the global batch size)."""
    if base_lr < 0 or batch_size < 1 or reference < 1:
        raise ValueError(f"scaled_lr: base_lr={base_lr}, batch_size={batch_size}, reference={reference}; "
                         "need base_lr >= 0 and positive sizes")
    return base_lr * batch_size / reference


def _all_cuda(groups: list[dict[str, Any]]) -> bool:
    return all(p.is_cuda for group in groups for p in group["params"])


def build_optimizer(
    name: str,
    params: Iterable[Any],
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    trust_coefficient: float = 0.001,
    clip: bool = False,
) -> torch.optim.Optimizer:
    """``sgd`` | ``lars`` | ``adamw`` over ``params`` (tensors or groups, e.g. from ``param_groups``).

    Each group starts at ``lr x lr_multiplier``; its own ``weight_decay`` wins over the argument. SGD and
    AdamW use torch's fused kernels when every parameter is on CUDA and the default (for-loop / foreach)
    implementation otherwise; LARS is cassle's own.
    """
    import torch

    from cassle.core.lars import LARS

    items = list(params)
    if not items:
        raise ValueError("build_optimizer: no parameters given")
    groups = [dict(g) for g in items] if isinstance(items[0], Mapping) else [{"params": items}]
    for group in groups:
        tensors = group["params"]
        group["params"] = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        group.setdefault(LR_MULTIPLIER, 1.0)
        group["lr"] = lr * group[LR_MULTIPLIER]
    fused = {"fused": True} if _all_cuda(groups) else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **fused)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient, clip=clip)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **fused)
    raise ValueError(f"build_optimizer: unknown optimiser {name!r}; choose one of {', '.join(OPTIMIZERS)}")
