"""`Registry`: the one owner of a list of names (frameworks, backbones, datasets, evaluation tasks, ...).

Everything else (config validation, the workflow plan, the report, the docs tables) reads the registry instead of
copying its names, so that registering an entry is all it takes to make a new name known everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from cassle.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-mostly mapping from names to entries of one `kind` (e.g. "framework").

    Order is registration order: reports and help texts list entries in it. Looking up a name that is not
    registered raises `UnknownNameError` naming the kind, the registered names and the closest match.
    """

    def __init__(self, kind: str, entries: Iterable[tuple[str, T]] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, entry in entries:
            self.register(name, entry)

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name` (a new name: re-registering one is an error) and return it."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry of `name` (for throw-away registrations, e.g. in tests)."""
        entry = self[name]
        del self._entries[name]
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r}{self.suggestion(name)}; one of "
                                   f"{self.listing()}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def listing(self) -> str:
        """The registered names, comma-separated, in registration order."""
        return ", ".join(self._entries)

    def suggestion(self, name: object) -> str:
        """' (did you mean X?)' for the closest registered name, else ''."""
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        return f" (did you mean {close[0]}?)" if close else ""

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.listing()})"
