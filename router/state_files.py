"""Crash-safe writes of the router's state files (keys, token secrets, admin token, config).

A reader sees either the old file or the new one, never a mix: the bytes go to a temporary file
in the same directory (same filesystem, so the rename is atomic), are fsync'ed, then
``os.replace`` swaps the name over and the directory is fsync'ed so the rename itself survives a
power cut. The temporary file is created with the final mode, so a secret is never readable by
others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "StateFileError",
    "atomic_create",
    "atomic_write",
    "ensure_private_dir",
    "exclusive",
    "read_json",
    "remove_stale_temps",
]


class StateFileError(ValueError):
    """A state file exists but cannot be used (unreadable, not JSON, wrong shape).

    The message names the file and the problem, never the file's content (it may hold secrets).
    """


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; a new directory gets mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary file next to ``path``; return its path."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp already creates 0600; fchmod makes other requested modes exact, umask aside.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically, with file mode ``mode``.

    On any failure the old file (if any) is left untouched and no temporary file remains.
    """
    path = Path(path)
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_create(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet, atomically.

    Returns True if this call created it, False if it already existed (the existing file wins,
    so two processes generating a secret at once agree on one). Uses ``os.link``, which fails
    when the target exists, instead of ``os.replace``, which would overwrite it.
    """
    path = Path(path)
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)
    return True


def read_json(path: Path) -> object | None:
    """Parse a JSON state file; None if it does not exist.

    Raises StateFileError naming the file (not its content) when it cannot be read or parsed.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read state file ({exc.strerror})") from None
    try:
        doc: object = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        # No chaining: the decoder's message quotes part of the document, which may be a secret.
        raise StateFileError(f"{path}: not valid JSON") from None
    return doc


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock for read-modify-write of ``path`` across processes.

    The lock lives in a hidden ``.<name>.lock`` next to ``path`` (the state file itself is
    replaced on every write, so it cannot carry a lock). Blocking: call off the event loop.
    """
    path = Path(path)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temps(path: Path, older_than_s: float = 60.0) -> int:
    """Delete temporary files a killed writer of ``path`` left behind; return how many.

    Only ``.<name>.*.tmp`` files older than ``older_than_s`` go, so a write in progress in
    another process is left alone.
    """
    path = Path(path)
    removed = 0
    cutoff = time.time() - older_than_s
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    return removed
