"""CASSLE's conditioning settings and the rules of which go together, without torch (the config checks them).

How omega enters the projector (`INJECTIONS`) and `ConditioningConfig`, checked as a whole on construction; the
modules that apply a configuration are in conditioning.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from cassle.augment import OMEGA_KEYS

INJECTIONS: dict[str, str] = {"cat": "Concatenation", "add": "Addition", "mul": "Multiplication",
                              "hypernet": "Hypernetwork"}
"""How omega enters the projector (config key `conditioning.injection`), with the paper's names for them (Table 4)."""
NO_INJECTION = "none"
"""An injection that ignores omega: the conditioned projector is exactly the vanilla one (for equivalence tests)."""
NEEDS_ENCODER = ("add", "mul", "hypernet")  # injections whose size the augmentation encoder must produce


class ConditioningError(ValueError):
    """Conditioning settings that do not go together; `field` is the setting at fault (config key
    `conditioning.<field>`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ConditioningConfig:
    """How the CASSLE variant conditions the projector, checked as a whole on construction (ConditioningError).

    omega_dim is computed by the caller from omega_keys (`cassle.augment.omega_dim`); encoder_out_dim (cat only)
    defaults to encoder_width."""

    omega_keys: tuple[str, ...] = OMEGA_KEYS
    encoder_depth: int = 6
    encoder_width: int = 64
    injection: str = "cat"
    hypernet_bn: bool = False
    encoder_out_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "omega_keys", tuple(self.omega_keys))
        problem = self.problem()
        if problem is not None:
            raise ConditioningError(*problem)

    def problem(self) -> tuple[str, str] | None:
        """(field, message) of the first rule these settings break, None when they go together."""
        keys, injection, depth = self.omega_keys, self.injection, self.encoder_depth
        if not keys or len(set(keys)) != len(keys) or not set(keys) <= set(OMEGA_KEYS):
            return "omega_keys", (f"omega_keys must be a non-empty list of distinct keys among {', '.join(OMEGA_KEYS)} "
                                  f"(without repeats), got {keys}")
        if injection not in INJECTIONS and injection != NO_INJECTION:
            return "injection", f"unknown injection {injection!r}; choose one of {', '.join(INJECTIONS)}"
        if depth < 0 or self.encoder_width < 1:
            return "encoder_depth", (f"encoder_depth must be >= 0 and encoder_width >= 1, got depth={depth}, "
                                     f"width={self.encoder_width}")
        if injection in NEEDS_ENCODER and depth < 1:
            return "encoder_depth", (f"injection {injection!r} needs an augmentation encoder (encoder_depth >= 1) to "
                                     f"map omega to the required size, got encoder_depth={depth}; use 'cat' to feed "
                                     "raw omega")
        if self.hypernet_bn and injection != "hypernet":
            return "hypernet_bn", ("hypernet_bn=True puts BatchNorm between hypernetwork-generated layers, so it "
                                   f"needs injection 'hypernet', got {injection!r}")
        if self.encoder_out_dim is not None and injection != "cat":
            return "encoder_out_dim", (f"encoder_out_dim={self.encoder_out_dim} only applies to injection 'cat' (got "
                                       f"{injection!r}): add/mul fix it to feat_dim and hypernet to the number of "
                                       "generated weights")
        return None
