"""The gateway's error answers: problem+json with OpenAI's ``error`` object added."""

from __future__ import annotations

from garrison.core.errors import Problem


def with_openai_error(exc: Problem) -> Problem:
    """OpenAI clients read ``error.message``; the problem+json fields stay for everyone else."""
    exc.extra.setdefault("error", {"message": exc.detail, "type": exc.slug, "code": exc.status})
    return exc
