"""Head shapes: `MLPSpec` and a framework's projector / predictor (`HeadSpecs`), as plain data.

No torch at import: the frameworks' table (cassle.methods.frameworks) declares its heads with these, and the config
and the workflow plan read it without building a model; `build` imports the torch side (heads.py) when called.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def check_positive(**values: int) -> None:
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class MLPSpec:
    """The shape of an `mlp` head; its input size is given at build time (backbone features or projector out)."""

    num_layers: int
    hidden_dim: int
    out_dim: int
    last_bn: bool = False
    last_bn_affine: bool = True
    hidden_bn: bool = True

    def __post_init__(self) -> None:
        check_positive(num_layers=self.num_layers, hidden_dim=self.hidden_dim, out_dim=self.out_dim)

    def dims(self, in_dim: int) -> list[int]:
        """Sizes of the layer boundaries: [in_dim, hidden, ..., hidden, out_dim] (num_layers + 1 entries)."""
        return [in_dim, *([self.hidden_dim] * (self.num_layers - 1)), self.out_dim]

    def build(self, in_dim: int) -> nn.Sequential:
        """The head as torch modules (`cassle.nets.heads.mlp`) on `in_dim` inputs."""
        from cassle.nets.heads import mlp

        return mlp(
            in_dim,
            self.hidden_dim,
            self.out_dim,
            self.num_layers,
            last_bn=self.last_bn,
            last_bn_affine=self.last_bn_affine,
            hidden_bn=self.hidden_bn,
        )


@dataclass(frozen=True)
class HeadSpecs:
    """A framework's projector and optional predictor (the predictor never sees omega). Each framework in
    cassle.methods declares its own (the paper's Table 5 and the authors' code)."""

    projector: MLPSpec
    predictor: MLPSpec | None = None

    def build_predictor(self) -> nn.Sequential | None:
        """The predictor, fed the projector's output."""
        return None if self.predictor is None else self.predictor.build(self.projector.out_dim)

    def with_projector(self, **fields: object) -> HeadSpecs:
        """These heads with some projector fields replaced (e.g. hidden_bn=False, num_layers=2)."""
        allowed = [f.name for f in dataclasses.fields(MLPSpec)]
        unknown = set(fields) - set(allowed)
        if unknown:
            raise ValueError(f"unknown projector field(s) {sorted(unknown)}; allowed: {allowed}")
        return dataclasses.replace(self, projector=dataclasses.replace(self.projector, **fields))
