"""schemathesis over garrison's own /openapi.json: no input ever causes a 500, and every
documented response matches its schema. Runs the `st` CLI against a real server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.live import LiveServer, start_server, stop_server

# Operations whose fuzzing would start real, slow work (model calls, runs) are covered by
# their layers' own hostile-input tests; everything else is fuzzed here. Sandboxes have
# their own run below (bubblewrap, few examples, a real sandbox behind every id).
SLOW_PREFIXES = ("/api/sandbox", "/v1/chat", "/v1/completions", "/v1/embeddings", "/mcp/", "/v1/traces",
                 "/v1/logs", "/api/public/otel", "/runtimes", "/threads", "/runs", "/api/gpus/simulate",
                 # These would revoke the fuzzer's own key or install a deny-all policy, after
                 # which every other operation only sees 401/403; tests/identity covers them.
                 "/api/keys/[^/]+/(revoke|rotate)", "/api/policies")
ST = str(Path(sys.executable).with_name("st"))


@pytest.mark.slow
def test_no_server_errors_and_schema_conformance(live_server: LiveServer) -> None:
    exclude = "^(" + "|".join(SLOW_PREFIXES) + ")"
    cmd = [ST, "run", live_server.url + "/openapi.json", "--checks",
           "not_a_server_error,response_schema_conformance", "-H",
           f"Authorization: Bearer {live_server.admin_key}", "--max-examples", "8",
           "--exclude-path-regex", exclude, "--phases", "examples,coverage,fuzzing", "--workers", "2",
           "--suppress-health-check", "all", "--no-color"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    # The failures and errors sections say what broke; the warnings after them do not.
    sections = [out.stdout.find(h) for h in ("FAILURES", "ERRORS")]
    start = min((i for i in sections if i >= 0), default=-1)
    report = (out.stdout[start:start + 12000] if start >= 0 else out.stdout[-6000:]) + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "passed" in out.stdout.lower(), report
    r = httpx.get(live_server.url + "/api/whoami", headers={"authorization": f"Bearer {live_server.admin_key}"})
    assert r.status_code == 200, "the fuzzer lost its credentials, so later operations were not exercised"


@pytest.mark.slow
def test_sandbox_api_fuzz_no_server_errors(tmp_path: Path) -> None:
    """/api/sandboxes and /api/sandbox-templates, on a server of their own: bubblewrap (fast
    starts), a short default lifetime and a small per-tenant cap, and every {sandbox_id}
    pointing at a real, running sandbox so the fuzzed bodies reach the sandbox itself."""
    if not Path("/usr/bin/bwrap").exists():
        pytest.skip("bubblewrap is not installed")
    server = start_server(tmp_path / "data", extra_env={
        "GARRISON_SANDBOX_BACKEND": "bubblewrap", "GARRISON_SANDBOX_DEFAULT_TIMEOUT_S": "60",
        "GARRISON_SANDBOX_MAX_SANDBOXES_PER_TENANT": "6", "GARRISON_SANDBOX_COMMAND_TIMEOUT_S": "5"})
    try:
        auth = {"authorization": f"Bearer {server.admin_key}"}
        r = httpx.post(server.url + "/api/sandboxes", json={"timeout_s": 600}, headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        httpx.put(server.url + f"/api/sandboxes/{sid}/files", params={"path": "a.txt"}, content=b"x", headers=auth)
        # Pass 1: everything but the two operations that end the sandbox (kill, a fuzzed
        # 1-second timeout), so the fuzzed bodies keep reaching a live sandbox. Pass 2: those two.
        ending = ('[[operations]]\ninclude-path = "/api/sandboxes/{sandbox_id}"\ninclude-method = "DELETE"\n'
                  'enabled = {0}\n\n[[operations]]\ninclude-path = "/api/sandboxes/{sandbox_id}/timeout"\n'
                  'enabled = {0}\n')
        for number, (regex, enabled) in enumerate((("^/api/sandbox", "false"),
                                                   ("^/api/sandboxes/[{]sandbox_id[}](/timeout)?$", "true"))):
            config = tmp_path / f"schemathesis-{number}.toml"
            config.write_text(f'[parameters]\nsandbox_id = "{sid}"\nname = "python"\n\n'
                              + ending.replace("{0}", enabled))
            cmd = [ST, "--config-file", str(config), "run", server.url + "/openapi.json", "--checks",
                   "not_a_server_error,response_schema_conformance", "-H",
                   f"Authorization: Bearer {server.admin_key}", "--max-examples", "3", "--include-path-regex",
                   regex, "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
                   "--suppress-health-check", "all", "--no-color", "--report", "har",
                   "--report-har-path", str(tmp_path / f"pass{number}.har")]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            print(out.stdout[-4000:])  # the summary, shown with -s or on failure
            start = out.stdout.find("FAILURES")
            report = (out.stdout[start:start + 12000] if start >= 0 else out.stdout[-6000:]) + out.stderr[-2000:]
            assert out.returncode == 0, report
            assert "passed" in out.stdout.lower(), report
            if number == 0:
                r = httpx.get(server.url + f"/api/sandboxes/{sid}", headers=auth, timeout=30)
                assert r.json()["state"] == "running", f"pass 1 should have driven a live sandbox throughout: {r.json()}"
    finally:
        stop_server(server)
