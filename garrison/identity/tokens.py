"""Short-lived Ed25519-signed JWTs a principal mints for an agent session (PyJWT)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from garrison.core.ids import new_id

ISSUER = "garrison"


class TokenSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._pub = key.public_key()

    def mint(self, *, sub: str, tenant_id: str, scopes: list[str], ttl_s: int, parent_key: str | None,
             session_id: str | None, name: str) -> tuple[str, dict[str, Any]]:
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": sub, "tid": tenant_id, "scp": scopes, "iat": now, "exp": now + ttl_s,
            "jti": new_id("tok"), "pky": parent_key, "sid": session_id, "nam": name,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA"), claims

    def verify(self, token: str) -> dict[str, Any]:
        """Raises jwt.PyJWTError when the token is bad or expired."""
        return jwt.decode(token, self._pub, algorithms=["EdDSA"], issuer=ISSUER,
                          options={"require": ["exp", "iat", "sub", "tid", "scp", "jti"]})


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")
