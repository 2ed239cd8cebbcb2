"""Dataset roots handed down by the workflow through the environment.

The workflow exports ``CASSLE_DATA_ROOTS`` (a JSON object ``{"name": "/path"}``) so that moving the data to another
machine changes no job's command line and so triggers no rerun; an explicit root (``--data-root``,
``--set data_root=``) always wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "CASSLE_DATA_ROOTS"


def roots_to_environment(roots: Mapping[str, str | os.PathLike[str] | None]) -> str:
    """The ``CASSLE_DATA_ROOTS`` value for `roots` (unset entries left out)."""
    return json.dumps({name: str(path) for name, path in roots.items() if path})


def root_from_environment(dataset: str) -> Path | None:
    """The root of `dataset` named by ``CASSLE_DATA_ROOTS``, or None."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        roots = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{ENV_VAR} must be a JSON object {{\"dataset\": \"/path\"}}, got {text!r}: {error}") from None
    if not isinstance(roots, dict):
        raise ValueError(f"{ENV_VAR} must be a JSON object {{\"dataset\": \"/path\"}}, got {text!r}")
    root = roots.get(dataset)
    return Path(root).expanduser() if root else None
