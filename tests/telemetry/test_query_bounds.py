"""Query times far outside what spans can carry are valid input, on both stores."""

from __future__ import annotations


async def test_queries_with_times_far_outside_the_span_range_are_not_errors(client):
    r = await client.get("/api/telemetry/usage", params={"since": "2026-11-26T01:33:13Z",
                                                          "until": "3426-03-12T15:26:20Z"})
    assert r.status_code == 200, r.text
    assert r.json()["cost_usd"] == 0
    r = await client.get("/api/traces", params={"since": "2026-11-26T01:31:30Z", "until": "0090-07-09T21:59:33Z",
                                                "agent": "\U0001f60d"})
    assert r.status_code == 200, r.text
