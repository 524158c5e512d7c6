"""Structured logs (one JSON object a line) that carry the request and trace ids."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("garrison_request_id", default=None)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("garrison_trace_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid, tid = request_id_var.get(), trace_id_var.get()
        if rid:
            entry["request_id"] = rid
        if tid:
            entry["trace_id"] = tid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("garrison")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
