"""API keys, as both tiers take them: a file of ``name:sha256-of-key[:limits]`` lines, so that the
file holds no secret. Keys are compared in constant time: every stored digest is compared with
``hmac.compare_digest``, whatever matched before, so timing tells nothing of how much matched.

    alice:5e88...f1                       a key without limits
    batch:9b74...0c:rpm=60,tpm=20000,streams=2
    temp:0c1d...9e:expires=2027-01-01     refused from that day on (UTC; or 2027-01-01T12:00:00Z)

``rpm`` counts chats per minute, ``tpm`` tokens per minute (prompt and new tokens), ``streams``
concurrent ``chatStream``s; absent or 0 is unlimited.

The file is read again when it changes (its size, time or inode, looked at on every
authentication: one ``stat``), or on ``reload()`` (SIGHUP): a key taken out or expired is refused
from the next request on, and ``current`` tells holders of an older ``ApiKey`` (open streams,
queued jobs) that it is gone. A file that no longer parses keeps the keys read before, with an
error in the log, as a server keeps its last good configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LIMIT_NAMES = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute", "streams": "concurrent_streams"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    concurrent_streams: int = 0


@dataclass(frozen=True)
class ApiKey:
    """Who is calling. ``digest`` is the SHA-256 of the key; the key itself is never stored."""

    name: str
    digest: bytes = field(repr=False)
    limits: KeyLimits = KeyLimits()
    expires_at: float | None = None  # UNIX seconds; None: never

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at


ANONYMOUS = ApiKey("anonymous", b"")  # the caller when keys are off


class KeyFileError(ValueError):
    """A line of the keys file that does not parse; the message names the file and the line."""


class KeyRing:
    def __init__(self, keys: list[ApiKey], path: str | Path | None = None) -> None:
        self.keys = keys
        self.path = Path(path) if path is not None else None
        self._seen = self._stamp()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        return cls(read_keys(path), path)

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self, force: bool = True) -> bool:
        """Read the file again (only if it changed, unless ``force``); True when the keys were replaced."""
        if self.path is None:
            return False
        with self._lock:
            stamp = self._stamp()
            if not force and stamp == self._seen:
                return False
            self._seen = stamp
            try:
                keys = read_keys(self.path)
            except (OSError, KeyFileError) as exc:
                log.error("keys file not reloaded, the keys read before stay in force: %s", exc)
                return False
            self.keys = keys
        log.info("keys file %s reloaded: %d keys", self.path, len(keys))
        return True

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key's owner, or None (an expired key too). Constant time in what matched: every
        digest is compared."""
        self.reload(force=False)
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return None if found is None or found.expired() else found

    def current(self, key: ApiKey) -> bool:
        """Whether ``key`` (authenticated earlier) still lets its holder in: still in the file, unexpired."""
        self.reload(force=False)
        return any(k.name == key.name and k.digest == key.digest for k in self.keys) and not key.expired()

    def owner(self, name: str) -> ApiKey | None:
        """The unexpired key of that name, or None (no such key any more: its jobs must not run)."""
        self.reload(force=False)
        found = next((k for k in self.keys if k.name == name), None)
        return None if found is None or found.expired() else found


_ON_HANGUP: weakref.WeakSet[KeyRing] = weakref.WeakSet()


def reload_on_hangup(keyring: KeyRing) -> None:
    """Read ``keyring``'s file again on SIGHUP (as nginx and most servers reload), from the running
    event loop; where signals cannot be handled (not the main thread, Windows) the file's change
    is still seen on the next request."""
    _ON_HANGUP.add(keyring)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _hangup)


def _hangup() -> None:
    for keyring in list(_ON_HANGUP):
        keyring.reload()


def read_keys(path: str | Path) -> list[ApiKey]:
    keys = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.append(parse_line(line, f"{path}:{number}"))
    if not keys:
        raise KeyFileError(f"{path} holds no key")
    return keys


def parse_line(line: str, where: str) -> ApiKey:
    name, _, rest = line.partition(":")
    digest_hex, _, limits_text = rest.partition(":")
    if not name or len(digest_hex) != 64:
        raise KeyFileError(f"{where}: expected name:sha256hex[:rpm=N,tpm=N,streams=N,expires=YYYY-MM-DD]")
    expires_at = None
    try:
        digest = bytes.fromhex(digest_hex)
        limits = {}
        for item in filter(None, (p.strip() for p in limits_text.split(","))):
            key, _, value = item.partition("=")
            if key.strip() == "expires":
                expires_at = expiry(value.strip())
            else:
                limits[LIMIT_NAMES[key.strip()]] = int(value)
    except (ValueError, KeyError) as exc:
        raise KeyFileError(f"{where}: {exc!r} (limits are rpm, tpm, streams; expires=YYYY-MM-DD)") from None
    return ApiKey(name, digest, KeyLimits(**limits), expires_at)


def expiry(text: str) -> float:
    """``2027-01-01`` (midnight UTC) or an ISO time (UTC unless it says its zone), as UNIX seconds."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def new_key(name: str) -> tuple[str, str]:
    """A new key and the line that lets it in."""
    key = "sk-" + secrets.token_urlsafe(32)
    return key, f"{name}:{hashlib.sha256(key.encode()).hexdigest()}"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``; lower-case header names."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None
