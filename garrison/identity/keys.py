"""API key format ``gk_<id>_<secret>``: the id finds the row, the secret is stored hashed.

The secret carries 256 bits of randomness, so a single SHA-256 is the right hash: a
slow password hash would add milliseconds to every request and buy nothing against
brute force of a random 256-bit value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ulid import ULID

KEY_RE = re.compile(r"^gk_([0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$")
SCOPE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}:([a-z][a-z0-9_.-]{0,63}|\*)$")


def new_key() -> tuple[str, str, str]:
    """Returns (key id, full key string, secret hash)."""
    ulid = str(ULID())
    secret = secrets.token_urlsafe(32)
    return f"key_{ulid}", f"gk_{ulid}_{secret}", hash_secret(secret)


def parse_key(token: str) -> tuple[str, str] | None:
    m = KEY_RE.match(token)
    if not m:
        return None
    return f"key_{m.group(1)}", m.group(2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def valid_scope(scope: str) -> bool:
    return bool(SCOPE_RE.match(scope))
