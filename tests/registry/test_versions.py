"""Version rules of the official registry: semver ordering, non-semver by time, ranges refused."""

from datetime import UTC, datetime, timedelta

import pytest

from garrison.core.errors import BadRequest
from garrison.registry.versions import check_version, compare_semver, compare_versions, is_semver

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


@pytest.mark.parametrize("version", ["1.0.0", "v1.2.3", "0.0.1-alpha.1", "1.0.0+build.5", "10.20.30-rc.1+b"])
def test_full_semver_is_semver(version):
    assert is_semver(version)


@pytest.mark.parametrize("version", ["1", "1.2", "01.2.3", "1.2.3.4", "2025-01-01", "1.0.0-", "abc"])
def test_shorthand_and_malformed_are_not_semver(version):
    assert not is_semver(version)


@pytest.mark.parametrize(("low", "high"), [
    ("1.0.0", "1.0.1"), ("1.9.0", "1.10.0"), ("1.0.0-alpha", "1.0.0"), ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"), ("1.0.0-beta.2", "1.0.0-beta.11"), ("1.0.0-rc.1", "1.0.0"),
    ("0.9.9", "v1.0.0"),
])
def test_semver_precedence(low, high):
    assert compare_semver(low, high) < 0
    assert compare_semver(high, low) > 0


def test_build_metadata_is_ignored():
    assert compare_semver("1.0.0+a", "1.0.0+b") == 0


def test_semver_beats_non_semver_whatever_the_time():
    assert compare_versions("1.0.0", "2025.1", T0, T1) > 0
    assert compare_versions("2025.1", "1.0.0", T1, T0) < 0


def test_non_semver_compare_by_publish_time():
    assert compare_versions("snapshot-b", "snapshot-a", T1, T0) > 0
    assert compare_versions("snapshot-b", "snapshot-a", T0, T1) < 0


@pytest.mark.parametrize("version", ["^1.2.3", "~1.2", ">=1", "<2", "=1.0.0", "1.x", "1.2.X", "*", "x",
                                     "1.0.0 - 2.0.0", "1 || 2", "latest", "", "1/../2", "a b", "..", "\x00"])
def test_ranges_reserved_and_unsafe_versions_refused(version):
    with pytest.raises(BadRequest):
        check_version(version)


def test_too_long_version_refused():
    with pytest.raises(BadRequest):
        check_version("1" * 256)


@pytest.mark.parametrize("version", ["1.0.0", "2025.01.01", "1.0.0-rc.1+build.2", "nightly"])
def test_concrete_versions_accepted(version):
    assert check_version(version) == version
