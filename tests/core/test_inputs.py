"""The shared input types: what PostgreSQL text and UTF-8 cannot hold is refused by name."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from garrison.core.errors import BadRequest
from garrison.core.inputs import DbText, check_storable, storable, storable_json


class _Body(BaseModel):
    name: DbText = Field(max_length=10)
    tags: list[DbText] = Field(default_factory=list)


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "ok\udfff"])
def test_nul_and_unpaired_surrogates_are_refused_by_field(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _Body(name=bad)
    assert exc.value.errors()[0]["loc"] == ("name",)
    with pytest.raises(ValidationError) as exc:
        _Body(name="x", tags=["fine", bad])
    assert exc.value.errors()[0]["loc"] == ("tags", 1)


def test_ordinary_text_passes_unchanged() -> None:
    for good in ("", "plain", "héllo \U0001f600", "\u202e"):
        assert storable(good) == good
    assert _Body(name="x" * 10).name == "x" * 10
    with pytest.raises(ValidationError):
        _Body(name="x" * 11)  # the field's own bounds still apply


def test_check_storable_walks_keys_and_values() -> None:
    check_storable({"a": ["b", {"c": 1}]}, "body")
    for bad in ({"a\x00": 1}, {"a": ["\x00"]}, "\ud800"):
        with pytest.raises(BadRequest):
            check_storable(bad, "body")


def test_storable_json_is_the_same_check_for_nested_values() -> None:
    assert storable_json({"a": [1, "b", None]}) == {"a": [1, "b", None]}
    for bad in ({"a\x00": 1}, [{"b": "\ud800"}]):
        with pytest.raises(ValueError):
            storable_json(bad)


def test_times_are_utc_and_within_what_can_be_read_back() -> None:
    from datetime import UTC, datetime

    from garrison.core.inputs import DbTime

    class _T(BaseModel):
        at: DbTime

    assert _T(at="2026-01-01T01:00:00+01:00").at == datetime(2026, 1, 1, tzinfo=UTC)
    assert _T(at="2026-01-01T00:00:00").at == datetime(2026, 1, 1, tzinfo=UTC)  # naive is UTC
    for bad in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        with pytest.raises(ValidationError) as exc:
            _T(at=bad)
        assert exc.value.errors()[0]["loc"] == ("at",)
