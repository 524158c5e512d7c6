"""Typed sandbox errors, rendered as problem+json with stable slugs (the client maps them back)."""

from __future__ import annotations

from garrison.core.errors import Forbidden, PayloadTooLarge, Problem, ServiceUnavailable


class SandboxTimeout(Problem):
    status, slug, title = 408, "sandbox-timeout", "Sandbox lifetime ended"


class CommandTimeout(Problem):
    status, slug, title = 408, "command-timeout", "Command timed out"


class OOMKilled(Problem):
    status, slug, title = 409, "oom-killed", "Sandbox ran out of memory"


class PidsExhausted(Problem):
    status, slug, title = 409, "pids-exhausted", "Sandbox process limit reached"


class SandboxGone(Problem):
    status, slug, title = 410, "sandbox-gone", "Sandbox is no longer running"


class PolicyDenied(Forbidden):
    slug, title = "policy-denied", "Denied by sandbox policy"


class PathEscape(Problem):
    status, slug, title = 400, "path-escape", "Path leaves the sandbox workspace"


class FileTooLarge(PayloadTooLarge):
    slug, title = "file-too-large", "File too large"


class BackendUnavailable(ServiceUnavailable):
    slug, title = "backend-unavailable", "Sandbox backend unavailable"


class BackendNotEnabled(Problem):
    """The backend is off by this server's configuration: not an outage to retry later."""
    status, slug, title = 409, "backend-not-enabled", "Sandbox backend not enabled"


class DiskFull(Problem):
    status, slug, title = 507, "disk-full", "Sandbox workspace is full"
