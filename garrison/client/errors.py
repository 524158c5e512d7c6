"""Typed exceptions raised from problem+json answers."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        self.detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        super().__init__(f"{status}: {self.detail}")


class BadRequestError(ApiError): ...
class UnauthorizedError(ApiError): ...
class ForbiddenError(ApiError): ...
class NotFoundError(ApiError): ...
class ConflictError(ApiError): ...
class PayloadTooLargeError(ApiError): ...
class ValidationError(ApiError): ...
class RateLimitedError(ApiError): ...
class ServerError(ApiError): ...


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError, 401: UnauthorizedError, 403: ForbiddenError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 422: ValidationError, 429: RateLimitedError,
}


def error_for(status: int, problem: dict[str, Any]) -> ApiError:
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, problem)
