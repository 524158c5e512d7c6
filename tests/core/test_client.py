"""The Python client, sync and async, raising typed exceptions from problem+json."""

from __future__ import annotations

import pytest

from garrison.client import AsyncClient, Client
from garrison.client.errors import ForbiddenError, NotFoundError, UnauthorizedError, ValidationError


def test_sync_client_against_a_live_server(tmp_path):
    from support.live import start_server, stop_server

    server = start_server(tmp_path / "data")
    try:
        with Client(server.url, server.admin_key) as c:
            assert "admin:*" in c.whoami()["scopes"]
            made = c.create_key(["registry:read"], name="from client")
            with Client(server.url, made["key"]) as limited:
                with pytest.raises(ForbiddenError) as err:
                    limited.list_keys()
                assert "keys:read" in err.value.detail
            with pytest.raises(NotFoundError):
                c.revoke_key("key_nope")
            with pytest.raises(ValidationError):
                c.create_key([])
            token = c.mint_token(["registry:read"], ttl_s=60)
            with Client(server.url, token["token"]) as t:
                assert t.whoami()["kind"] == "agent"
        with Client(server.url, "gk_bad") as bad, pytest.raises(UnauthorizedError):
            bad.whoami()
    finally:
        stop_server(server)


async def test_async_client_in_process(app, admin_key):
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://garrison.test", admin_key, transport=transport) as c:
        me = await c.whoami()
        assert me["tenant_id"]
        made = await c.create_key(["tools:call"], name="async")
        assert made["key"].startswith("gk_")
        await c.revoke_key(made["id"])
        with pytest.raises(NotFoundError):
            await c.revoke_key("key_missing")
