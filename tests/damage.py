"""Ways to damage a file on disk, shared by the checkpoint and reliability tests.

Usage (pytest puts tests/ on sys.path): `from damage import truncate, garble, drop_sidecar`.
"""

from __future__ import annotations

from pathlib import Path


def truncate(path: Path) -> None:
    """Keep the first half of the file (a write cut off by a crash)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    """Flip bits of 16 bytes in the middle of the file (bit rot, a bad copy); the size stays."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def drop_sidecar(path: Path) -> None:
    """Delete the checksum file of a checkpoint (a save interrupted before its commit)."""
    path.with_name(path.name + ".sha256").unlink()
