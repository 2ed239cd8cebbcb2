"""Which torch device a run or an evaluation uses, from the name a user gave (auto, cpu, cuda, cuda:N)."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = None, auto: torch.device | None = None) -> torch.device:
    """The device called `name`. None or "auto" is `auto` when given (a distributed process's own device), else
    CUDA when available, else the CPU. A name torch does not know, or CUDA on a machine without it, raises
    ValueError."""
    if name is None or str(name) == "auto":
        if auto is not None:
            return auto
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a torch device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} was asked for but CUDA is not available on this machine; use auto "
                         "or cpu")
    return device
