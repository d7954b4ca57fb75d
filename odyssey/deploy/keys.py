"""API keys: ``ody-`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits).

Only the sha256 of a key is stored, so a leaked database gives away no key; the key itself is
printed once, at creation. A plain hash (not bcrypt/argon2) is the standard choice for
high-entropy random tokens (GitHub and Stripe tokens are checked the same way): guessing is
hopeless anyway, and a slow KDF would cost every request tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from odyssey.errors import OdysseyError

PREFIX = "ody-"
SCOPES = ("inference", "feedback", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class NewKey:
    id: int
    name: str
    key: str  # shown once
    prefix: str
    scopes: list[str]


def create_key(
    store,
    name: str,
    scopes: list[str] | None = None,
    rate_limit_rpm: int | None = None,
    max_concurrency: int | None = None,
) -> NewKey:
    from odyssey.store import deploy as sd

    if not _NAME.match(name or ""):
        raise OdysseyError(
            f"key name {name!r} is not allowed",
            hint="use 1-64 letters, digits and _.@- (starting with a letter or digit)",
        )
    scopes = list(scopes or ["inference", "feedback"])
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise OdysseyError(f"unknown scope(s) {unknown}", hint=f"scopes: {', '.join(SCOPES)}")
    for label, value in (("rate limit", rate_limit_rpm), ("max concurrency", max_concurrency)):
        if value is not None and value < 1:
            raise OdysseyError(f"{label} must be at least 1 (got {value})")
    if any(k["name"] == name for k in sd.keys(store)):
        raise OdysseyError(
            f"an active key named {name!r} already exists",
            hint=f"pick another name, or revoke the old key first (odyssey keys revoke {name})",
        )
    key = PREFIX + secrets.token_urlsafe(32)
    prefix = key[: len(PREFIX) + 6]
    key_id = sd.add_key(store, name, prefix, hash_key(key), scopes, rate_limit_rpm, max_concurrency)
    return NewKey(key_id, name, key, prefix, scopes)


def list_keys(store, include_revoked: bool = False) -> list[dict]:
    from odyssey.store import deploy as sd

    return [{k: v for k, v in row.items() if k != "key_hash"} for row in sd.keys(store, include_revoked)]


def revoke(store, name_or_prefix: str) -> int:
    from odyssey.store import deploy as sd

    n = sd.revoke_key(store, name_or_prefix)
    if n == 0:
        known = ", ".join(f"{k['name']} ({k['prefix']})" for k in sd.keys(store)) or "none"
        raise OdysseyError(f"no active key named or prefixed {name_or_prefix!r}", hint=f"active keys: {known}")
    return n


def verify(store, key: str) -> dict | None:
    """The key's row if it is known and not revoked, else None."""
    from odyssey.store import deploy as sd

    if not key or not key.startswith(PREFIX) or len(key) > 200:
        return None
    row = sd.key_by_hash(store, hash_key(key))
    if row is None or row["revoked_at"] is not None:
        return None
    return row
