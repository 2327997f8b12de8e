"""Per-endpoint API keys (primary and secondary) and the admin token, persisted in the state dir.

``<state_dir>/keys.json`` holds every endpoint's two keys; it is written atomically with mode 0600
(see ``router.state_files``). Keys are ``secrets.token_urlsafe(32)`` (256 bits). Two keys exist so a
client can rotate without downtime: move clients to the secondary, regenerate the primary, and so
on; regenerating one key never touches the other.

Nothing here puts a key into a repr, a log line or an exception message.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from router.state_files import (
    StateFileError,
    atomic_create,
    atomic_write,
    ensure_private_dir,
    exclusive,
    read_json,
    remove_stale_temps,
)
from scoring import ConfigError

__all__ = [
    "ADMIN_TOKEN_ENV",
    "EndpointKeys",
    "InvalidKeyRequest",
    "KeyStore",
    "KeyType",
    "UnknownEndpoint",
    "load_admin_token",
]

KeyType = Literal["Primary", "Secondary"]
KEY_TYPES: tuple[KeyType, ...] = ("Primary", "Secondary")

ADMIN_TOKEN_ENV = "INFERGATE_ADMIN_TOKEN"
KEYS_FILE = "keys.json"
ADMIN_TOKEN_FILE = "admin-token"

# A key travels as `Authorization: Bearer <key>`: visible ASCII without spaces, so it survives
# every HTTP stack unchanged. 16 chars is a floor for user-chosen keys, not a recommendation.
_KEY_RE = re.compile(r"[!-~]{16,256}")
MIN_ADMIN_TOKEN_CHARS = 16


class InvalidKeyRequest(ConfigError, ValueError):
    """A regenerate request is invalid. ``field`` is ``keyType`` or ``keyValue``.

    A ConfigError, so the router's status table answers 400 naming the field; also a ValueError.
    The message never contains the offered key value.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.problem = problem


class UnknownEndpoint(KeyError):
    """No keys are stored for this endpoint (404 in the admin API)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.endpoint = endpoint

    def __str__(self) -> str:
        return f"endpoint '{self.endpoint}' has no keys"


def _generate_key() -> str:
    return secrets.token_urlsafe(32)


def _as_bytes(value: str) -> bytes:
    # compare_digest on str accepts ASCII only and raises TypeError otherwise; bytes always work.
    return value.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class EndpointKeys:
    """An endpoint's two keys. ``repr`` hides them."""

    primary: str = field(repr=False)
    secondary: str = field(repr=False)

    def which(self, candidate: str) -> Literal["primary", "secondary"] | None:
        """Which key ``candidate`` is, if any. Always compares against both keys in constant
        time, so timing tells neither how much of a key matched nor which key it was."""
        given = _as_bytes(candidate)
        is_primary = hmac.compare_digest(given, _as_bytes(self.primary))
        is_secondary = hmac.compare_digest(given, _as_bytes(self.secondary))
        if is_primary:
            return "primary"
        if is_secondary:
            return "secondary"
        return None

    def matches(self, candidate: str) -> bool:
        """True if ``candidate`` is either key (both compared, constant time)."""
        return self.which(candidate) is not None

    def as_api(self) -> dict[str, str]:
        """The admin API's shape: ``{"primaryKey": ..., "secondaryKey": ...}``."""
        return {"primaryKey": self.primary, "secondaryKey": self.secondary}


class KeyStore:
    """Every endpoint's keys, held in memory and persisted to ``<state_dir>/keys.json``.

    The file is the source of truth. Mutations take a thread lock and an advisory file lock,
    re-read the file, change it, write it, and only then swap the in-memory table, so a failed
    write leaves both the file and the live keys as they were, and two processes sharing a state
    dir do not undo each other's changes (each sees the other's after ``reload``). Mutations block
    on disk I/O (fsync): call them off the event loop. ``get`` only reads memory.
    """

    def __init__(self, state_dir: Path) -> None:
        self._dir = Path(state_dir)
        self._path = self._dir / KEYS_FILE
        self._lock = threading.Lock()
        if self._dir.is_dir():
            remove_stale_temps(self._path)
        self._keys: dict[str, EndpointKeys] = self._load()

    def reload(self) -> None:
        """Re-read the file (e.g. on SIGHUP, or after another process changed it)."""
        with self._lock:
            self._keys = self._load()

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> dict[str, EndpointKeys]:
        data = read_json(self._path)
        if data is None:
            return {}
        endpoints = data.get("endpoints") if isinstance(data, dict) else None
        if not isinstance(endpoints, dict):
            raise StateFileError(f"{self._path}: expected an object with 'endpoints'")
        table: dict[str, EndpointKeys] = {}
        for name, entry in endpoints.items():
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("primary"), str)
                and isinstance(entry.get("secondary"), str)
            ):
                raise StateFileError(
                    f"{self._path}: endpoint '{name}' needs 'primary' and 'secondary' strings"
                )
            table[name] = EndpointKeys(entry["primary"], entry["secondary"])
        return table

    def _exclusive(self) -> AbstractContextManager[None]:
        ensure_private_dir(self._dir)
        return exclusive(self._path)

    def _save(self, table: Mapping[str, EndpointKeys]) -> None:
        doc = {
            "version": 1,
            "endpoints": {
                name: {"primary": k.primary, "secondary": k.secondary} for name, k in sorted(table.items())
            },
        }
        atomic_write(self._path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)

    def endpoints(self) -> list[str]:
        return sorted(self._keys)

    def ensure(self, endpoint: str) -> EndpointKeys:
        """The endpoint's keys, generating and persisting both on first use."""
        existing = self._keys.get(endpoint)
        if existing is not None:
            return existing
        with self._lock, self._exclusive():
            table = self._load()
            keys = table.get(endpoint)  # another process may have made them meanwhile
            if keys is None:
                keys = EndpointKeys(_generate_key(), _generate_key())
                table[endpoint] = keys
                self._save(table)
            self._keys = table
            return keys

    def get(self, endpoint: str) -> EndpointKeys:
        """The endpoint's keys; UnknownEndpoint (a KeyError) if it has none."""
        try:
            return self._keys[endpoint]
        except KeyError:
            raise UnknownEndpoint(endpoint) from None

    def regenerate(self, endpoint: str, key_type: KeyType, value: str | None = None) -> EndpointKeys:
        """Replace one key with a fresh random one (or with ``value``); the other stays valid.

        InvalidKeyRequest names ``keyType`` or ``keyValue`` when the request is invalid;
        UnknownEndpoint when the endpoint has no keys.
        """
        if key_type not in KEY_TYPES:
            raise InvalidKeyRequest("keyType", "must be 'Primary' or 'Secondary'")
        if value is not None and (not isinstance(value, str) or _KEY_RE.fullmatch(value) is None):
            # The value is a secret: the message describes the rule, never echoes the input.
            raise InvalidKeyRequest("keyValue", "must be 16 to 256 visible ASCII characters without spaces")
        with self._lock, self._exclusive():
            table = self._load()
            current = table.get(endpoint)
            if current is None:
                raise UnknownEndpoint(endpoint)
            other = current.secondary if key_type == "Primary" else current.primary
            if value is not None and hmac.compare_digest(_as_bytes(value), _as_bytes(other)):
                raise InvalidKeyRequest("keyValue", "must differ from the other key")
            new = value if value is not None else _generate_key()
            keys = (
                EndpointKeys(new, current.secondary)
                if key_type == "Primary"
                else EndpointKeys(current.primary, new)
            )
            table[endpoint] = keys
            self._save(table)
            self._keys = table
            return keys

    def remove(self, endpoint: str) -> None:
        """Forget the endpoint's keys (no error if it has none)."""
        with self._lock, self._exclusive():
            table = self._load()
            if table.pop(endpoint, None) is not None:
                self._save(table)
            self._keys = table


def load_admin_token(state_dir: Path, env: Mapping[str, str]) -> str:
    """The admin API's bearer token.

    ``INFERGATE_ADMIN_TOKEN`` wins when set; otherwise ``<state_dir>/admin-token`` is read, and
    generated (mode 0600, atomically, once even with racing processes) when missing. Raises
    ConfigError for a token shorter than 16 characters (an empty variable is a mistake, not a
    request for an open admin API) and StateFileError for an unreadable file.
    """
    from_env = env.get(ADMIN_TOKEN_ENV)
    if from_env is not None:
        token = from_env.strip()
        if _KEY_RE.fullmatch(token) is None:
            # It must survive `Authorization: Bearer <token>`; the value is not echoed.
            raise ConfigError(
                ADMIN_TOKEN_ENV,
                f"must be {MIN_ADMIN_TOKEN_CHARS} to 256 visible ASCII characters without spaces",
            )
        return token
    state_dir = Path(state_dir)
    path = state_dir / ADMIN_TOKEN_FILE
    ensure_private_dir(state_dir)
    if not path.exists():
        atomic_create(path, _generate_key().encode() + b"\n", 0o600)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"{path}: cannot read admin token ({type(exc).__name__})") from None
    if _KEY_RE.fullmatch(token) is None:
        raise StateFileError(
            f"{path}: admin token must be {MIN_ADMIN_TOKEN_CHARS} to 256 visible ASCII characters without spaces"
        )
    if os.stat(path).st_mode & 0o077:
        # Someone loosened it (or created it by hand): a readable admin token is a leaked one.
        os.chmod(path, 0o600)
    return token
