"""The console shell serves no data and locks itself down."""

from __future__ import annotations


async def test_console_shell_is_served_with_a_strict_policy(anon_client):
    r = await anon_client.get("/console")
    assert r.status_code == 200 and "garrison console" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert "gk_" not in r.text.replace("gk_...", "")  # no key is ever embedded in the page


async def test_console_data_needs_a_key(anon_client):
    assert (await anon_client.get("/api/keys")).status_code == 401
    assert (await anon_client.get("/api/audit")).status_code == 401
