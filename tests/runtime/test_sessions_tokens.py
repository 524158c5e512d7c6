"""A session's token: minted by garrison's identity layer, scoped to llm:invoke and tools:call
for the session's tenant and owner, re-minted before it expires."""

from __future__ import annotations

import time

import pytest

from garrison.runtime.sessions import Session, manager


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def test_session_token_scope_and_renewal(platform):
    sessions = manager(platform.services["runtime"])
    tenant = platform.identity.default_tenant_id
    sess = Session(tenant, "echo", "default", "s" * 40, owner="alice")
    token = sessions.current_token(sess)
    principal = await platform.identity.authenticate(token)
    assert principal.scopes == frozenset({"llm:invoke", "tools:call"})
    assert principal.tenant_id == tenant and principal.id == "alice" and principal.session_id == "s" * 40
    assert not principal.has_scope("runtime:invoke") and not principal.has_scope("sandbox:create")
    assert sessions.current_token(sess) == token  # still fresh: the same token
    sess.token_expires = time.time() + 1  # nearly expired: a new one
    renewed = sessions.current_token(sess)
    assert renewed != token and (await platform.identity.authenticate(renewed)).id == "alice"
