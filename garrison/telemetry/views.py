"""Shapes stored rows into API answers: span views, the trace tree, decision chain, summaries."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson

from garrison.core.clock import rfc3339

STATUS = {0: "unset", 1: "ok", 2: "error"}


def ns_to_rfc3339(ns: int) -> str:
    return rfc3339(datetime.fromtimestamp(ns / 1e9, UTC)) or ""


def span_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "kind": row["kind"],
        "service": row["service_name"],
        "start_time": ns_to_rfc3339(row["start_ns"]),
        "end_time": ns_to_rfc3339(row["end_ns"]),
        "duration_ms": round(row["duration_ms"], 3),
        "status": STATUS.get(row["status_code"], "unset"),
        "status_message": row["status_message"] or None,
        "error_class": row["error_class"],
        "operation": row["operation"],
        "model": row["model"],
        "provider": row["provider"],
        "usage": {
            "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
            "cached_tokens": row["cached_tokens"], "reasoning_tokens": row["reasoning_tokens"],
        } if row["kind"] == "model" else None,
        "cost_usd": row["cost_usd"],
        "tool_name": row["tool_name"],
        "tool_call_id": row["tool_call_id"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "agent": row["agent_name"],
        "gateway": bool(row["gateway"]),
        "flags": row["flags"].split(",") if row["flags"] else [],
        "attributes": orjson.loads(row["attributes"]),
        "events": orjson.loads(row["events"]) if row["events"] else [],
    }


def _content_by_span(contents: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    out: dict[str | None, dict[str, Any]] = defaultdict(lambda: {"input": {}, "output": {}, "events": []})
    for c in contents:
        body = orjson.loads(c["body"])
        slot = out[c["span_id"]]
        if c["source"] == "log":
            slot["events"].append(body)
        else:
            slot["input"].update(body.get("input", {}))
            slot["output"].update(body.get("output", {}))
    return out


def trace_view(trace_id: str, rows: list[dict[str, Any]], contents: list[dict[str, Any]]) -> dict[str, Any]:
    by_content = _content_by_span(contents)
    views = {r["span_id"]: span_view(r) for r in rows}
    for sid, view in views.items():
        if sid in by_content:
            view["content"] = by_content[sid]
        view["children"] = []
    roots: list[dict[str, Any]] = []
    orphans = 0
    for view in views.values():
        parent = view["parent_span_id"]
        if parent is None:
            roots.append(view)
        elif parent in views:
            views[parent]["children"].append(view)
        else:
            # Its parent never arrived (or not yet): shown at the top, flagged.
            view["orphan"] = True
            orphans += 1
            roots.append(view)
    start = min(r["start_ns"] for r in rows)
    end = max(r["end_ns"] for r in rows)
    return {
        "trace_id": trace_id,
        "start_time": ns_to_rfc3339(start),
        "duration_ms": round((end - start) / 1e6, 3),
        "span_count": len(rows),
        "orphan_count": orphans,
        "summary": summarize(rows),
        "decision_chain": decision_chain(rows, by_content),
        "spans": roots,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_model: dict[str, dict[str, Any]] = {}
    by_kind: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    total_cost, unpriced = 0.0, 0
    tokens = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0}
    for r in rows:
        by_kind[r["kind"]] += 1
        if r["error_class"]:
            errors[r["error_class"]] += 1
        if r["kind"] != "model":
            continue
        m = by_model.setdefault(r["model"] or "", {"calls": 0, "input_tokens": 0, "output_tokens": 0,
                                                    "cost_usd": 0.0, "duration_ms": 0.0})
        m["calls"] += 1
        m["input_tokens"] += r["input_tokens"]
        m["output_tokens"] += r["output_tokens"]
        m["duration_ms"] = round(m["duration_ms"] + r["duration_ms"], 3)
        for k in tokens:
            tokens[k] += r[k]
        if r["cost_usd"] is None:
            unpriced += 1
        else:
            m["cost_usd"] += r["cost_usd"]
            total_cost += r["cost_usd"]
    return {
        "cost_usd": round(total_cost, 10),
        "unpriced_calls": unpriced,
        **tokens,
        "by_model": by_model,
        "by_kind": dict(by_kind),
        "errors": dict(errors),
    }


def decision_chain(rows: list[dict[str, Any]], contents: dict[str | None, dict[str, Any]]) -> list[dict[str, Any]]:
    """Model calls and tool calls in order; each model step lists the tools chosen after it."""
    steps: list[dict[str, Any]] = []
    last_model: dict[str, Any] | None = None
    for r in sorted(rows, key=lambda r: (r["start_ns"], r["span_id"])):
        if r["kind"] not in ("model", "tool", "guardrail"):
            continue
        step: dict[str, Any] = {
            "step": len(steps) + 1,
            "kind": r["kind"],
            "span_id": r["span_id"],
            "name": r["name"],
            "agent": r["agent_name"],
            "status": STATUS.get(r["status_code"], "unset"),
            "error_class": r["error_class"],
            "duration_ms": round(r["duration_ms"], 3),
        }
        if r["kind"] == "model":
            step.update(model=r["model"], tools_chosen=[])
            last_model = step
        elif r["kind"] == "tool":
            step.update(tool_name=r["tool_name"], tool_call_id=r["tool_call_id"])
            if last_model is not None:
                last_model["tools_chosen"].append(r["tool_name"] or r["name"])
        captured = contents.get(r["span_id"])
        if captured is not None:
            step["input"] = captured["input"] or None
            step["output"] = captured["output"] or None
        steps.append(step)
    return steps


def trace_summary_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "trace_id": row["trace_id"],
        "name": row.get("root", {}).get("name"),
        "kind": row.get("root", {}).get("kind"),
        "agent": row.get("root", {}).get("agent_name"),
        "service": row.get("root", {}).get("service_name"),
        "session_id": row.get("session_id"),
        "user_id": row.get("user_id"),
        "start_time": ns_to_rfc3339(row["start_ns"]),
        "duration_ms": round((row["end_ns"] - row["start_ns"]) / 1e6, 3),
        "span_count": row["span_count"],
        "error_count": int(row["error_count"] or 0),
        "status": "error" if row["status_code"] == 2 else "ok",
        "cost_usd": round(row["cost_usd"], 10) if row["cost_usd"] is not None else None,
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[idx], 3)
