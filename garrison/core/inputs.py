"""What a request may carry into the database, as types every layer's wire models share.

PostgreSQL text cannot hold NUL, UTF-8 cannot encode an unpaired surrogate (json.loads
accepts "\\ud800"), a time must stay within years 1-9999 in UTC to be read back, and
integer columns are 32-bit (``Integer``) or 64-bit (``BigInteger``); SQLite raises
OverflowError past 64 bits. Each of these reached a query as a 500 before; with these it
is a 4xx that names the field. Use them on every string, time and integer of an input
model that is stored or used in a query.
"""

from __future__ import annotations

from datetime import UTC, datetime
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


def storable_json(value: Any) -> Any:
    """``value`` if every string in it (keys too) is storable; ValueError if not. PostgreSQL's
    jsonb refuses \u0000 as well, and a json column cast to jsonb in a query fails on it."""
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            storable(k)
            storable_json(v)
    elif isinstance(value, list):
        for v in value:
            storable_json(v)
    return value


def check_storable(value: Any, what: str) -> None:
    """For bodies read as plain JSON: a 400 naming ``what`` unless every string in it is storable."""
    try:
        storable_json(value)
    except ValueError as exc:
        raise BadRequest(f"{what} {exc}") from None


def storable_time(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC) if it is within years 1-9999 there; ValueError if not.
    0001-01-01T00:00:00+23:59 is year 0 in UTC: PostgreSQL stores it, then every read of the
    row fails ("timestamp too small"), so one bad write broke the table's readers for good."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be between 0001-01-01 and 9999-12-31 in UTC") from None


# A string both databases can store. Combine with Field(max_length=...) as usual. (Integers
# take Field(le=INT32_MAX) or le=INT64_MAX: an Annotated bound would lose to the field's own ge.)
DbText = Annotated[str, AfterValidator(storable)]
# Any JSON (dict, list, ...) whose strings both databases can store.
DbJson = AfterValidator(storable_json)
# A time both databases and Python can store and read back, as UTC.
DbTime = Annotated[datetime, AfterValidator(storable_time)]
