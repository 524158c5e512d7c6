"""What a request may carry into the database, as types every layer's wire models share.

PostgreSQL text cannot hold NUL, UTF-8 cannot encode an unpaired surrogate (json.loads
accepts "\\ud800"), and integer columns are 32-bit (``Integer``) or 64-bit (``BigInteger``);
SQLite raises OverflowError past 64 bits. Each of these reached a query as a 500 before;
with these it is a 4xx that names the field. Use them on every string and integer of an
input model that is stored or used in a query.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from garrison.core.errors import BadRequest

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def storable(value: str) -> str:
    """``value`` if both databases can store it as text; ValueError (a 422 in a model) if not."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no unpaired surrogate)") from None
    return value


def check_storable(value: Any, what: str) -> None:
    """For bodies read as plain JSON: every string in ``value`` (keys too) must be storable."""
    if isinstance(value, str):
        try:
            storable(value)
        except ValueError as exc:
            raise BadRequest(f"{what} {exc}") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_storable(k, what)
            check_storable(v, what)
    elif isinstance(value, list):
        for v in value:
            check_storable(v, what)


# A string both databases can store. Combine with Field(max_length=...) as usual. (Integers
# take Field(le=INT32_MAX) or le=INT64_MAX: an Annotated bound would lose to the field's own ge.)
DbText = Annotated[str, AfterValidator(storable)]
