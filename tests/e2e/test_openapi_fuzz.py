"""schemathesis over garrison's own /openapi.json: no input ever causes a 500, and every
documented response matches its schema. Runs the `st` CLI against a real server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.live import LiveServer

# Operations whose fuzzing would start real, slow work (sandboxes, model calls, runs) are
# covered by their layers' own hostile-input tests; everything else is fuzzed here.
SLOW_PREFIXES = ("/api/sandboxes", "/v1/chat", "/v1/completions", "/v1/embeddings", "/mcp/", "/v1/traces",
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
    start = out.stdout.find("FAILURES")
    report = (out.stdout[start:start + 12000] if start >= 0 else out.stdout[-6000:]) + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "passed" in out.stdout.lower(), report
    r = httpx.get(live_server.url + "/api/whoami", headers={"authorization": f"Bearer {live_server.admin_key}"})
    assert r.status_code == 200, "the fuzzer lost its credentials, so later operations were not exercised"
