"""Endpoint keys: generation, persistence (0600, atomic), regeneration, constant-time matching,
and the admin token."""

from __future__ import annotations

import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router import keys as keys_module
from router.keys import (
    ADMIN_TOKEN_ENV,
    EndpointKeys,
    InvalidKeyRequest,
    KeyStore,
    UnknownEndpoint,
    load_admin_token,
)
from router.state_files import StateFileError
from scoring import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_generates_two_distinct_random_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state")
    keys = store.ensure("demo")
    assert keys.primary != keys.secondary
    for key in (keys.primary, keys.secondary):
        assert len(key) == 43  # token_urlsafe(32)
    assert store.ensure("demo") == keys  # idempotent
    assert store.get("demo") == keys
    assert store.ensure("other") != keys


def test_keys_persist_across_instances_with_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = KeyStore(state).ensure("demo")
    assert KeyStore(state).get("demo") == keys
    assert _mode(state / "keys.json") == 0o600
    assert _mode(state) == 0o700
    assert sorted(os.listdir(state)) == [".keys.json.lock", "keys.json"]


def test_two_stores_on_one_dir_do_not_undo_each_other(tmp_path: Path) -> None:
    a, b = KeyStore(tmp_path), KeyStore(tmp_path)
    ka = a.ensure("a")
    kb = b.ensure("b")  # b re-reads the file under the lock before writing
    assert b.get("a") == ka
    assert a.ensure("b") == kb  # a adopts b's keys instead of generating others
    regenerated = a.regenerate("a", "Primary")
    assert b.get("a") == ka  # b serves from memory...
    b.reload()
    assert b.get("a") == regenerated  # ...until it reloads (SIGHUP)
    b.remove("b")
    assert KeyStore(tmp_path).endpoints() == ["a"]
    assert KeyStore(tmp_path).get("a") == regenerated


def test_stale_temp_files_removed_on_start(tmp_path: Path) -> None:
    KeyStore(tmp_path).ensure("demo")
    old = tmp_path / ".keys.json.abc123.tmp"
    fresh = tmp_path / ".keys.json.def456.tmp"
    old.write_text("half a secret")
    fresh.write_text("a write in progress")
    os.utime(old, (1_000_000, 1_000_000))
    KeyStore(tmp_path)
    assert not old.exists()
    assert fresh.exists()  # might belong to another process writing right now


def test_get_unknown_endpoint(tmp_path: Path) -> None:
    with pytest.raises(UnknownEndpoint) as info:
        KeyStore(tmp_path).get("nope")
    assert isinstance(info.value, KeyError)
    assert "nope" in str(info.value)


@pytest.mark.parametrize("key_type", ["Primary", "Secondary"])
def test_regenerate_one_leaves_the_other_valid(tmp_path: Path, key_type: str) -> None:
    store = KeyStore(tmp_path)
    old = store.ensure("demo")
    new = store.regenerate("demo", key_type)  # type: ignore[arg-type]
    if key_type == "Primary":
        assert new.primary != old.primary and new.secondary == old.secondary
        assert not new.matches(old.primary) and new.matches(old.secondary)
    else:
        assert new.secondary != old.secondary and new.primary == old.primary
        assert not new.matches(old.secondary) and new.matches(old.primary)
    assert KeyStore(tmp_path).get("demo") == new  # persisted


def test_regenerate_with_value(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.ensure("demo")
    value = "my-own-key-0123456789"
    keys = store.regenerate("demo", "Secondary", value)
    assert keys.secondary == value
    assert KeyStore(tmp_path).get("demo").matches(value)


def test_regenerate_rejects_bad_key_type(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.ensure("demo")
    with pytest.raises(InvalidKeyRequest) as info:
        store.regenerate("demo", "Tertiary")  # type: ignore[arg-type]
    assert info.value.field == "keyType"
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)
    assert str(info.value) == "keyType: must be 'Primary' or 'Secondary'"


@pytest.mark.parametrize(
    "value", ["short", "has space in the middle!", "x" * 257, "ünïcödé-key-value-long", ""]
)
def test_regenerate_rejects_bad_value_without_echoing_it(tmp_path: Path, value: str) -> None:
    store = KeyStore(tmp_path)
    before = store.ensure("demo")
    with pytest.raises(InvalidKeyRequest) as info:
        store.regenerate("demo", "Primary", value)
    assert info.value.field == "keyValue"
    assert str(info.value).startswith("keyValue: ")
    if value:
        assert value not in str(info.value)
    assert store.get("demo") == before


def test_regenerate_rejects_value_equal_to_other_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    keys = store.ensure("demo")
    with pytest.raises(InvalidKeyRequest) as info:
        store.regenerate("demo", "Primary", keys.secondary)
    assert info.value.field == "keyValue"
    assert keys.secondary not in str(info.value)


def test_regenerate_unknown_endpoint(tmp_path: Path) -> None:
    with pytest.raises(UnknownEndpoint):
        KeyStore(tmp_path).regenerate("nope", "Primary")


def test_failed_write_keeps_old_keys_live_and_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path)
    old = store.ensure("demo")

    def broken(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys_module, "atomic_write", broken)
    with pytest.raises(OSError):
        store.regenerate("demo", "Primary")
    assert store.get("demo") == old
    monkeypatch.undo()
    assert KeyStore(tmp_path).get("demo") == old


def test_remove(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.ensure("a")
    keep = store.ensure("b")
    store.remove("a")
    store.remove("never-existed")
    assert store.endpoints() == ["b"]
    reloaded = KeyStore(tmp_path)
    assert reloaded.endpoints() == ["b"] and reloaded.get("b") == keep


def test_repr_hides_keys(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path).ensure("demo")
    assert keys.primary not in repr(keys) and keys.secondary not in repr(keys)


def test_as_api_shape() -> None:
    keys = EndpointKeys("p" * 20, "s" * 20)
    assert keys.as_api() == {"primaryKey": "p" * 20, "secondaryKey": "s" * 20}


@pytest.mark.parametrize("which", ["primary", "secondary", "neither", "prefix", "non-ascii"])
def test_matching_always_compares_both_keys_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    keys = EndpointKeys("primary-key-0123456789", "secondary-key-0123456789")
    candidate = {
        "primary": keys.primary,
        "secondary": keys.secondary,
        "neither": "something-else-entirely",
        "prefix": keys.primary[:-1],
        "non-ascii": "prímary-key-0123456789",
    }[which]
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    result = keys.which(candidate)
    assert result == (which if which in ("primary", "secondary") else None)
    assert keys.matches(candidate) == (result is not None)
    # Two comparisons per call, against both keys, whichever matched (or none).
    assert len(calls) == 4
    assert {b for _, b in calls} == {keys.primary.encode(), keys.secondary.encode()}


def test_corrupt_keys_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"endpoints": {"demo": {"primary": "only-one-secret"}}}))
    with pytest.raises(StateFileError) as info:
        KeyStore(tmp_path)
    assert "keys.json" in str(info.value) and "only-one-secret" not in str(info.value)


def test_admin_token_from_env_wins(tmp_path: Path) -> None:
    token = "env-admin-token-0123456789"
    assert load_admin_token(tmp_path, {ADMIN_TOKEN_ENV: token}) == token
    assert not (tmp_path / "admin-token").exists()


@pytest.mark.parametrize(
    "value", ["", "   ", "short", "has spaces in the admin token", "admïn-token-0123456789"]
)
def test_admin_token_from_env_invalid(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_admin_token(tmp_path, {ADMIN_TOKEN_ENV: value})
    assert info.value.field == ADMIN_TOKEN_ENV
    if value.strip():
        assert value not in str(info.value)


def test_admin_token_generated_once_into_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = load_admin_token(state, {})
    assert len(token) >= 32
    assert load_admin_token(state, {}) == token
    assert _mode(state / "admin-token") == 0o600
    assert (state / "admin-token").read_text().strip() == token


def test_admin_token_existing_file_used_and_mode_tightened(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("hand-written-admin-token-42\n")
    path.chmod(0o644)
    assert load_admin_token(tmp_path, {}) == "hand-written-admin-token-42"
    assert _mode(path) == 0o600


def test_admin_token_file_too_short(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("tiny\n")
    with pytest.raises(StateFileError) as info:
        load_admin_token(tmp_path, {})
    assert "tiny" not in str(info.value)


_REGENERATOR = """
import sys
from pathlib import Path
from router.keys import KeyStore
store = KeyStore(Path(sys.argv[1]))
while True:
    store.regenerate("demo", "Primary")
"""


def test_router_killed_while_regenerating_keeps_a_valid_keys_file(tmp_path: Path) -> None:
    """SIGKILL a process regenerating keys in a loop: the file still loads, the untouched
    secondary key survives, and the primary is one that was fully written."""
    store = KeyStore(tmp_path)
    original = store.ensure("demo")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _REGENERATOR, str(tmp_path)], cwd=root)
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline and proc.poll() is None:
            seen.add(KeyStore(tmp_path).get("demo").primary)  # every read must parse
        assert len(seen) >= 4, "regenerating process made no progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    after = KeyStore(tmp_path).get("demo")
    assert after.secondary == original.secondary
    assert len(after.primary) == 43 and after.primary != original.primary
