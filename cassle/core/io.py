"""Crash-safe file output: every result file is written atomically, per-step history survives a kill.

Atomic writes go to a hidden temporary file in the destination's folder (``.<name>.<random>.tmp``),
which is flushed, fsync'ed and then moved over the destination with ``os.replace``; the folder is
fsync'ed afterwards. A crash or an exception before the rename leaves the destination as it was (the
old content, or no file); a process killed mid-write may leave the hidden temporary file behind.

JSON policy: keys sorted, indent 2, UTF-8, and non-finite floats (NaN, +-Infinity) are REJECTED on
write and on read with an error naming where they are, because strict JSON has no such values
(write ``None`` or a string such as ``"nan"`` explicitly when a value can be undefined).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]
_CHUNK = 1 << 20


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the ``with`` block completes.

    ``mode`` is ``"wb"`` or ``"w"``; text is written as given (no newline translation). Parent folders
    are created. If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode {mode!r} is not supported; use 'wb' (bytes) or 'w' (text)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as for a plain open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    text_args = {"encoding": encoding, "newline": ""} if mode == "w" else {}
    try:
        with os.fdopen(fd, mode, **text_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: PathLike) -> Iterator[None]:
    """Hold the lock file ``path`` exclusively (``fcntl.flock``; created with its folder when missing) for the block:
    one process at a time, on this machine or any sharing the filesystem's locks."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)


def append_line(path: PathLike, line: str) -> None:
    """Append one line to a log file (created with its folder), flushed at once: a crash loses at most that line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a failure while pickling leaves ``path`` untouched."""
    import torch  # deferred: the JSON/CSV helpers here are also used by steps that never need torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def to_jsonable(obj: Any, where: str = "$") -> Any:
    """Plain-JSON copy of ``obj``: numpy/torch scalars and arrays via ``tolist()``, paths and non-str keys
    as strings, tuples as lists. Raises ``ValueError`` naming the location of a non-finite float and
    ``TypeError`` for anything else JSON cannot hold. ``where`` is the location used in messages.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(
                f"non-finite float {obj!r} at {where}: JSON has no NaN/Infinity; "
                "store None or a string such as 'nan' explicitly"
            )
        return obj
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value, f"{where}.{key}") for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if callable(getattr(obj, "tolist", None)):  # numpy scalars/arrays, torch tensors
        return to_jsonable(obj.tolist(), where)
    raise TypeError(
        f"value of type {type(obj).__name__} at {where} cannot be written as JSON; "
        "allowed: None, bool, int, finite float, str, mappings, lists/tuples, paths, numpy/torch values"
    )


def dumps_json(obj: Any) -> str:
    """The exact text ``write_json`` writes: sorted keys, indent 2, trailing newline."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (sorted keys, indent 2; non-finite floats rejected)."""
    try:
        text = dumps_json(obj)
    except (ValueError, TypeError) as err:
        raise type(err)(f"write_json({os.fspath(path)!r}): {err}") from None
    atomic_write_text(path, text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite JSON constant {name!r}; strict JSON has no NaN/Infinity")


def read_json(path: PathLike) -> Any:
    """Read a JSON file (strict: NaN/Infinity literals raise ``ValueError`` naming the file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, parse_constant=_reject_constant)
    except ValueError as err:
        raise ValueError(f"read_json({os.fspath(path)!r}): {err}") from None


def _fieldnames_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the rows' keys in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _csv_text(fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n", extrasaction="raise")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv_rows(
    path: PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None
) -> None:
    """Write a whole CSV table atomically; columns default to the union of the rows' keys in order of
    first appearance, and a missing value is written as an empty cell."""
    columns = list(fieldnames) if fieldnames is not None else _fieldnames_of(rows)
    extra = set(_fieldnames_of(rows)) - set(columns)
    if extra:
        raise ValueError(f"write_csv_rows({os.fspath(path)!r}): rows have columns {sorted(extra)} "
                         f"that are not in fieldnames {columns}; add them to fieldnames")
    atomic_write_text(path, _csv_text(columns, rows))


def read_csv_rows(path: PathLike) -> list[dict[str, str]]:
    """All rows of a CSV file with a header, values as strings."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


class HistoryWriter:
    """Append-only per-step CSV history that survives a kill.

    Each ``append`` writes one row and flushes it to the OS, so a killed process loses at most the row
    being written (a torn last line is dropped when the file is reopened). ``resume_step=None`` starts
    a new history (an existing file is replaced by the header); ``resume_step=k`` keeps the rows whose
    ``step_key`` value is <= k and drops later ones (the steps that will be trained again). Both
    rewrites are atomic. The header of an existing file must equal ``fieldnames``.
    """

    def __init__(
        self,
        path: PathLike,
        fieldnames: Sequence[str],
        step_key: str = "step",
        resume_step: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        if step_key not in self.fieldnames:
            raise ValueError(f"HistoryWriter: step_key {step_key!r} is not one of fieldnames {self.fieldnames}")
        self.step_key = step_key
        kept = [] if resume_step is None else self._rows_up_to(resume_step)
        atomic_write_text(self.path, _csv_text(self.fieldnames, kept))
        self._handle: IO[str] | None = open(self.path, "a", encoding="utf-8", newline="")

    def _rows_up_to(self, resume_step: int) -> list[dict[str, str]]:
        """Complete rows of the existing file with step <= resume_step (none if there is no file)."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        text = text[: text.rfind("\n") + 1]  # drop a torn last line
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is not None and list(reader.fieldnames) != self.fieldnames:
            raise ValueError(
                f"HistoryWriter: {self.path} has columns {reader.fieldnames}, expected {self.fieldnames}; "
                "it belongs to a different run: use a new output folder or delete the file"
            )
        kept = []
        for line, row in enumerate(reader, start=2):
            try:
                step = int(row[self.step_key])
            except (TypeError, ValueError):
                raise ValueError(
                    f"HistoryWriter: {self.path} line {line} has {self.step_key}={row[self.step_key]!r}, "
                    "expected an integer; the file is corrupt: delete it to start the history over"
                ) from None
            if step <= resume_step:
                kept.append(row)
        return kept

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row (missing columns stay empty) and flush it."""
        if self._handle is None:
            raise ValueError(f"HistoryWriter: {self.path} is closed; create a new writer to append")
        extra = set(row) - set(self.fieldnames)
        if extra:
            raise ValueError(
                f"HistoryWriter: row has columns {sorted(extra)} not in {self.fieldnames}; "
                "declare every column when creating the writer"
            )
        self._handle.write(_csv_text(self.fieldnames, [row], header=False))
        self._handle.flush()

    def close(self) -> None:
        """Flush to disk (fsync) and close; closing twice is allowed."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_savefig(figure: Any, path: PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format follows the suffix of `path` (.png, .pdf, ...)."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format=path.suffix.lstrip(".") or "png", **kwargs)
