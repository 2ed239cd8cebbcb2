"""The errors that reach a user as one line (`cassle: error: ...`), without a traceback."""

from __future__ import annotations


class CassleError(Exception):
    """An error whose message is the whole story: printed without a traceback (set CASSLE_DEBUG=1 for one)."""


class UnknownNameError(KeyError, ValueError):
    """A name that a registry does not hold; the message lists the registered names and the closest one.

    A KeyError, so that registries behave as mappings (`name in registry`, `registry.get(name)`), and a ValueError,
    so that the command line prints it as one line like every other bad input."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
