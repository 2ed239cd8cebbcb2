"""Watching a long computation while it runs: the hooks a training loop or an evaluation calls, and how it ended.

An :class:`Observer` hears that a computation ``started``, its ``metrics`` at each logged step, the ``datasets``
it reads, and how it ``finished``: FINISHED, FAILED (an exception, a non-finite loss) or KILLED (Ctrl-C, SIGTERM,
a preemption: ``KeyboardInterrupt``, :class:`Terminated`, ``SystemExit``). The computation never depends on what an
observer does with them: the tracking mirror (cassle/apps/tracking) is one observer, a test can be another.

Code deep inside a computation (feature extraction, a solver's sweep) reports progress to the :func:`active`
observer, which :func:`observing` sets for the duration of a block; it is a no-op when nothing observes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


class Terminated(BaseException):
    """SIGTERM arrived (see :func:`stop_on_sigterm`): like ``KeyboardInterrupt``, not an error of the computation."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def final_status(error: BaseException | None) -> str:
    """How a computation that raised ``error`` (None: none) ended: FINISHED, KILLED (interrupted, terminated,
    exited: submitit's requeue exits with SystemExit) or FAILED (any other exception)."""
    if error is None:
        return FINISHED
    return KILLED if isinstance(error, (KeyboardInterrupt, SystemExit, Terminated)) else FAILED


@dataclass(frozen=True)
class DatasetUse:
    """A dataset split a computation reads: ``context`` is its role (``train`` for pretraining, ``eval``), ``root``
    its folder (None for a generated dataset), ``size`` its number of items, ``digest`` a cheap fingerprint of its
    items (None where none is cheap; cassle.data.describe_dataset says what it covers)."""

    name: str
    split: str
    root: str | None
    size: int
    digest: str | None
    context: str


class Observer(Protocol):
    """What a computation tells whoever watches it. Every method must return quickly and never raise."""

    def started(self, step: int, params: Mapping[str, Any], since: str | None = None) -> None:
        """The computation starts at ``step`` (> 0: resumed from a checkpoint) with these parameters; ``since``: when
        its first attempt started (ISO 8601), None for now."""

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Values at ``step``, measured now."""

    def dataset(self, use: DatasetUse) -> None:
        """The computation reads this dataset split."""

    def finished(self, status: str) -> None:
        """The computation ended with ``status`` (FINISHED, FAILED or KILLED); its files are written when FINISHED."""


class NullObserver:
    """Hears everything, does nothing."""

    def started(self, step: int, params: Mapping[str, Any], since: str | None = None) -> None:
        pass

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def dataset(self, use: DatasetUse) -> None:
        pass

    def finished(self, status: str) -> None:
        pass


_active: list[Observer] = [NullObserver()]


def active() -> Observer:
    """The observer of the computation running now (a NullObserver outside :func:`observing`)."""
    return _active[-1]


@contextmanager
def observing(observer: Observer) -> Iterator[Observer]:
    """Make ``observer`` the active one for the block, and tell it how the block ended (:func:`final_status`)."""
    _active.append(observer)
    try:
        yield observer
    except BaseException as error:
        observer.finished(final_status(error))
        raise
    else:
        observer.finished(FINISHED)
    finally:
        _active.remove(observer)


@contextmanager
def stop_on_sigterm(notify: Callable[[int], None] | None = None) -> Iterator[None]:
    """SIGTERM during the block raises :class:`Terminated` in the main thread, so that the computation ends as KILLED
    and its observers hear it. Where a handler of SIGTERM is already set (submitit sets one that ignores SIGTERM, as
    preemption on Slurm sends it before the requeue signal), that handler keeps deciding, and ``notify(signum)``
    is called first: the observer can record that a stop was asked for. In a thread other than the main one, or with
    SIGTERM ignored, nothing changes."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread of the main interpreter
        yield
        return
    if previous is signal.SIG_IGN:
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if not callable(previous):
            raise Terminated(signum)
        if notify is not None:
            notify(signum)
        previous(signum, frame)

    try:
        signal.signal(signal.SIGTERM, handle)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
