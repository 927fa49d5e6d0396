"""API keys, as both tiers take them: a file of ``name:sha256-of-key[:limits]`` lines, so that the
file holds no secret. Keys are compared in constant time: every stored digest is compared with
``hmac.compare_digest``, whatever matched before, so timing tells nothing of how much matched.

    alice:5e88...f1                       a key without limits
    batch:9b74...0c:rpm=60,tpm=20000,streams=2

``rpm`` counts chats per minute, ``tpm`` tokens per minute (prompt and new tokens), ``streams``
concurrent ``chatStream``s; absent or 0 is unlimited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LIMIT_NAMES = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute", "streams": "concurrent_streams"}


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


ANONYMOUS = ApiKey("anonymous", b"")  # the caller when keys are off


class KeyFileError(ValueError):
    """A line of the keys file that does not parse; the message names the file and the line."""


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        keys = []
        for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                keys.append(parse_line(line, f"{path}:{number}"))
        if not keys:
            raise KeyFileError(f"{path} holds no key")
        return cls(keys)

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key's owner, or None. Constant time in what matched: every digest is compared."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def parse_line(line: str, where: str) -> ApiKey:
    name, _, rest = line.partition(":")
    digest_hex, _, limits_text = rest.partition(":")
    if not name or len(digest_hex) != 64:
        raise KeyFileError(f"{where}: expected name:sha256hex[:rpm=N,tpm=N,streams=N]")
    try:
        digest = bytes.fromhex(digest_hex)
        limits = {}
        for item in filter(None, (p.strip() for p in limits_text.split(","))):
            key, _, value = item.partition("=")
            limits[LIMIT_NAMES[key.strip()]] = int(value)
    except (ValueError, KeyError) as exc:
        raise KeyFileError(f"{where}: {exc!r} (limits are rpm, tpm, streams)") from None
    return ApiKey(name, digest, KeyLimits(**limits))


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
