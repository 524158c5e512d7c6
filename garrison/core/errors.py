"""RFC 9457 problem+json errors with stable ``type`` URIs.

Every error a client can see is a :class:`Problem`; the server renders it as
``application/problem+json`` and never leaks a stack trace.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://garrison.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if slug:
            self.slug = slug
        if title:
            self.title = title
        self.headers = headers or {}
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class ValidationFailed(Problem):
    status, slug, title = 422, "validation-failed", "Request validation failed"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str, **kw: Any) -> None:
        headers = kw.pop("headers", None) or {}
        headers.setdefault("WWW-Authenticate", 'Bearer realm="garrison"')
        super().__init__(detail, headers=headers, **kw)


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class TooManyRequests(Problem):
    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        headers = kw.pop("headers", None) or {}
        if retry_after_s is not None:
            headers.setdefault("Retry-After", str(max(1, int(retry_after_s + 0.999))))
            headers.setdefault("retry-after-ms", str(max(1, int(retry_after_s * 1000))))
        super().__init__(detail, headers=headers, **kw)


class NotImplementedProblem(Problem):
    status, slug, title = 501, "not-implemented", "Not implemented"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "unavailable", "Service unavailable"
