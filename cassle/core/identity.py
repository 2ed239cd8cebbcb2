"""What names a run: the canonical JSON of its config, the config hash and the run folder name (no torch, so the
workflow plan names runs without importing it)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from cassle.core.io import to_jsonable

_NAME_PART = re.compile(r"[A-Za-z0-9_]+")


def _canonical(obj: Any) -> Any:
    """Normalise numbers so that their spelling cannot change the hash: an integral float becomes an int."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {key: _canonical(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_canonical(value) for value in obj]
    return obj


def canonical_json(config: Mapping[str, Any]) -> str:
    """The text ``config_hash`` hashes: compact JSON with sorted keys, non-str keys as strings, tuples as
    lists, numpy/torch values as Python values, integral floats as ints (``1.0`` -> ``1``), other floats
    in their shortest round-trip form (``1e-4`` and ``0.0001`` agree). NaN/Infinity are rejected."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    plain = _canonical(to_jsonable(config, where="config"))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """First 12 hex digits of the sha256 of ``canonical_json(config)``; every key of ``config`` counts,
    so pass only what changes the result (not output paths or worker counts)."""
    return hashlib.sha256(canonical_json(config).encode("ascii")).hexdigest()[:12]


def run_name(framework: str, variant: str, config: Mapping[str, Any]) -> str:
    """Run folder name ``<framework>-<variant>-<hash8>``: the same config always lands in the same folder."""
    for label, value in (("framework", framework), ("variant", variant)):
        if not isinstance(value, str) or not _NAME_PART.fullmatch(value):
            raise ValueError(
                f"run_name: {label} {value!r} must be a non-empty string of letters, digits and '_' "
                "('-' separates the name's parts)"
            )
    return f"{framework}-{variant}-{config_hash(config)[:8]}"
