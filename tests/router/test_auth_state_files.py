"""Atomic state files: a reader sees the old file or the new one, never a mix, never a temp file."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from router.state_files import (
    StateFileError,
    atomic_create,
    atomic_write,
    exclusive,
    read_json,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_creates_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    atomic_write(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["keys.json"]


def test_atomic_write_honours_mode_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "router.yaml", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "router.yaml") == 0o644


def test_atomic_write_replaces_and_tightens_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    target.chmod(0o644)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600


def test_failure_between_write_and_replace_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keys.json"
    atomic_write(target, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keys.json"]


def test_failure_during_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keys.json"
    atomic_write(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keys.json"]


def test_atomic_create_only_once(tmp_path: Path) -> None:
    target = tmp_path / "admin-token"
    assert atomic_create(target, b"first") is True
    assert atomic_create(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["admin-token"]


def test_read_json_missing_is_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json") is None


def test_read_json_corrupt_names_file_not_content(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    target.write_text('{"primary": "s3cr3t-key-value", ')
    with pytest.raises(StateFileError) as info:
        read_json(target)
    assert "keys.json" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from router.state_files import atomic_write
    target = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        # 1 MiB of one byte, then the counter: a torn file would mix bytes or be short.
        atomic_write(target, bytes([65 + i % 26]) * (1 << 20) + str(i).encode())
    """
)


def _whole(data: bytes) -> bool:
    body, counter = data[: 1 << 20], data[1 << 20 :]
    return len(body) == 1 << 20 and body == body[:1] * (1 << 20) and counter.isdigit()


def test_killed_writer_never_leaves_a_torn_file(tmp_path: Path) -> None:
    """SIGKILL a process in the middle of rewriting the file in a loop: the file is whole."""
    target = tmp_path / "state.bin"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=root)
    try:
        deadline = time.monotonic() + 30
        seen = 0
        # Let it complete a few rewrites (checking each file we read is whole), then kill it.
        while seen < 5 and time.monotonic() < deadline and proc.poll() is None:
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                continue
            assert _whole(data)
            seen = max(seen, int(data[1 << 20 :]))
        assert seen >= 5, "writer made no progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert _whole(target.read_bytes())
    # A kill can strand a temp file (it is hidden and never read); the real file is never one.
    assert all(name == "state.bin" or name.startswith(".state.bin.") for name in os.listdir(tmp_path))


def test_exclusive_holds_a_lock_others_cannot_take(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    with exclusive(target):
        # flock locks belong to an open file description: a second open stands for another
        # process (no subprocess or sleep needed).
        fd = os.open(tmp_path / ".keys.json.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / ".keys.json.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)
