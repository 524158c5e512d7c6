"""Outbound credentials: encrypted at rest (Fernet, key file in the data dir), turned into
request headers per upstream. The caller's own token is never among them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet, InvalidToken

from garrison.core.errors import BadRequest, ServiceUnavailable

AUTH_KINDS = ("none", "bearer", "api_key_header", "oauth_client_credentials")


class SecretBox:
    """Encrypts secrets with a key kept in ``<data dir>/tools.key`` (mode 0600)."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / "tools.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        self._fernet = Fernet(path.read_bytes().strip())

    def seal(self, secret: str | None) -> str | None:
        return None if not secret else self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str | None) -> str | None:
        if not sealed:
            return None
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ServiceUnavailable("an upstream credential cannot be decrypted: was tools.key replaced?") from exc


class OAuthTokens:
    """OAuth 2.0 client-credentials tokens per upstream, refreshed shortly before they expire."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, float]] = {}

    async def token(self, upstream_id: str, token_url: str, client_id: str, client_secret: str,
                    scope: str | None, timeout_s: float) -> str:
        hit = self._cache.get(upstream_id)
        if hit and hit[1] > time.monotonic() + 30:
            return hit[0]
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as client:
                resp = await client.post(token_url, data=data, auth=(client_id, client_secret))
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"OAuth token endpoint unreachable: {exc}") from exc
        try:
            body: dict[str, Any] = resp.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceUnavailable(f"OAuth token endpoint answered {resp.status_code} without a token") from exc
        self._cache[upstream_id] = (token, time.monotonic() + float(body.get("expires_in", 300)))
        return token

    def forget(self, upstream_id: str) -> None:
        self._cache.pop(upstream_id, None)


def check_auth(kind: str, header: str | None, secret: str | None, token_url: str | None,
               client_id: str | None) -> None:
    if kind not in AUTH_KINDS:
        raise BadRequest(f"auth.kind must be one of {', '.join(AUTH_KINDS)}")
    if kind in ("bearer", "api_key_header", "oauth_client_credentials") and not secret:
        raise BadRequest(f"auth.kind {kind} needs auth.secret")
    if kind == "api_key_header" and not header:
        raise BadRequest("auth.kind api_key_header needs auth.header (e.g. X-Api-Key)")
    if kind == "oauth_client_credentials" and not (token_url and client_id):
        raise BadRequest("auth.kind oauth_client_credentials needs auth.token_url and auth.client_id")
