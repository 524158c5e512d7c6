"""TLS, and mutual TLS when a client CA is configured, on a real server process."""

from __future__ import annotations

import ssl

import httpx
import pytest
from support.certs import make_pki
from support.live import start_server, stop_server


def _ctx(pki: dict[str, str], with_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if with_client_cert:
        ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    return ctx


@pytest.mark.slow
def test_tls_and_mtls(tmp_path):
    pki = make_pki(tmp_path)
    env = {"GARRISON_TLS_CERTFILE": pki["server_cert"], "GARRISON_TLS_KEYFILE": pki["server_key"]}
    server = start_server(tmp_path / "tls", env, scheme="https", verify=_ctx(pki, False))
    try:
        r = httpx.get(server.url + "/api/whoami", verify=_ctx(pki, False),
                      headers={"authorization": f"Bearer {server.admin_key}"})
        assert r.status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            httpx.get(server.url.replace("https", "http") + "/healthz", timeout=3)  # plain HTTP is refused
    finally:
        stop_server(server)

    env["GARRISON_TLS_CLIENT_CA"] = pki["ca"]
    server = start_server(tmp_path / "mtls", env, scheme="https", verify=_ctx(pki, True))
    try:
        r = httpx.get(server.url + "/api/whoami", verify=_ctx(pki, True),
                      headers={"authorization": f"Bearer {server.admin_key}"})
        assert r.status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(server.url + "/healthz", verify=_ctx(pki, False), timeout=5)
    finally:
        stop_server(server)
