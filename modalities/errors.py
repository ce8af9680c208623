"""Errors raised by the readers when a file on disk is missing or not what it claims to be.

Every message starts with the offending path, then says what is wrong and, where it can,
what to do about it::

    /data/kitti/000042.bin: 1003 bytes is not a multiple of the 16-byte record
    (float32 x, y, z, intensity); the file is truncated or not a KITTI scan
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file (or calibration) is malformed: wrong size, bad values, inconsistent."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class MissingDataError(DataError, FileNotFoundError):
    """A data file that should exist does not (catchable as FileNotFoundError too)."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        super().__init__(path, f"{what} not found")


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``Path(path)`` if it is an existing regular file, else raise MissingDataError."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise DataError(p, f"{what} is not a regular file")
        raise MissingDataError(p, what)
    return p
