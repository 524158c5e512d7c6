"""`garrison up` end to end: first start prints the key; the key works; no key is a 401."""

from __future__ import annotations

import json
import subprocess

import httpx
from support.live import GARRISON, start_server, stop_server


def test_first_start_prints_admin_key_and_it_authenticates(tmp_path):
    server = start_server(tmp_path / "data")
    try:
        r = httpx.get(server.url + "/api/whoami", headers={"authorization": f"Bearer {server.admin_key}"})
        assert r.status_code == 200 and "admin:*" in r.json()["scopes"]
        r = httpx.get(server.url + "/api/whoami")
        assert r.status_code == 401
    finally:
        out = stop_server(server)
    assert server.admin_key in out
    assert "is up" in out and "/api" in out
    # A second start does not print a new key.
    again = start_server(tmp_path / "data")
    out2 = stop_server(again)
    assert again.admin_key == server.admin_key and server.admin_key not in out2


def test_cli_keys_and_audit_against_a_running_server(live_server):
    env = live_server.env
    run = lambda *a: subprocess.run([GARRISON, *a], env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    made = run("keys", "create", "--scope", "registry:read", "--ttl", "1d", "--name", "ci")
    assert made.returncode == 0, made.stderr
    new_key = made.stdout.strip().splitlines()[-1]
    assert new_key.startswith("gk_")
    r = httpx.get(live_server.url + "/api/whoami", headers={"authorization": f"Bearer {new_key}"})
    assert r.json()["scopes"] == ["registry:read"]
    listed = run("keys", "list", "--format", "json")
    assert listed.returncode == 0 and "ci" in listed.stdout
    key_id = r.json()["key_id"]
    assert run("keys", "revoke", key_id).returncode == 0
    r = httpx.get(live_server.url + "/api/whoami", headers={"authorization": f"Bearer {new_key}"})
    assert r.status_code == 401
    bad = run("keys", "create", "--scope", "not-a-scope")
    assert bad.returncode == 1 and "scope" in bad.stderr
    bad_ttl = run("keys", "create", "--scope", "registry:read", "--ttl", "soon")
    assert bad_ttl.returncode == 2
    assert run("tenants", "create", "acme").returncode == 0
    tenants = run("tenants", "list", "--format", "json")
    assert "acme" in tenants.stdout
    tail = run("audit", "tail", "-n", "50", "--format", "json")
    assert tail.returncode == 0 and "keys:revoke" in tail.stdout
    verify = run("audit", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True


def test_doctor_and_version(live_server):
    out = subprocess.run([GARRISON, "doctor", "--json"], env=live_server.env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    for k in ("database", "runsc", "bubblewrap", "isolation", "temporal_cli", "gpus", "redis"):
        assert k in info
    v = subprocess.run([GARRISON, "version"], capture_output=True, text=True, timeout=30)
    assert v.stdout.strip()[0].isdigit()


def test_cli_without_a_server_says_so(tmp_path):
    env = {"GARRISON_DATA_DIR": str(tmp_path / "nothing"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([GARRISON, "keys", "list"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "admin.key" in out.stderr
