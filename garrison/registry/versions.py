"""Version rules of the official MCP registry.

Semver is judged as golang.org/x/mod/semver does after the registry's ``v`` prefixing,
and only a full ``major.minor.patch`` counts; two semver versions compare as semver,
a semver version beats a non-semver one, and two non-semver versions compare by
publish time. Ranges (``^1.2``, ``1.x``, ``>=1``) and ``latest`` are refused.
"""

from __future__ import annotations

import re
from datetime import datetime

from garrison.core.errors import BadRequest

_NUM = r"(0|[1-9][0-9]*)"
_PRE_ID = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"^v?{_NUM}\.{_NUM}\.{_NUM}(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_BAD_CHARS = re.compile(r"[\s/\\\x00-\x1f\x7f]")
MAX_VERSION_LENGTH = 255


def parse_semver(version: str) -> tuple[int, int, int, tuple[str, ...]] | None:
    """(major, minor, patch, prerelease identifiers) or None when not a full semver."""
    m = _SEMVER.match(version)
    if not m:
        return None
    pre = m.group(4)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), tuple(pre.split(".")) if pre else ()


def is_semver(version: str) -> bool:
    return parse_semver(version) is not None


def _cmp(a: object, b: object) -> int:
    return (a > b) - (a < b)  # type: ignore[operator]


def _compare_prerelease(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    if a == b:
        return 0
    if not a:
        return 1  # a release outranks any of its prereleases
    if not b:
        return -1
    for x, y in zip(a, b, strict=False):
        if x == y:
            continue
        xn, yn = x.isdigit(), y.isdigit()
        if xn and yn:
            return _cmp(int(x), int(y))
        if xn != yn:
            return -1 if xn else 1  # numeric identifiers sort before alphanumeric ones
        return _cmp(x, y)
    return _cmp(len(a), len(b))


def compare_semver(a: str, b: str) -> int:
    pa, pb = parse_semver(a), parse_semver(b)
    if pa is None or pb is None:
        raise ValueError("both versions must be semver")
    core = _cmp(pa[:3], pb[:3])
    return core if core else _compare_prerelease(pa[3], pb[3])


def compare_versions(a: str, b: str, published_a: datetime, published_b: datetime) -> int:
    """The official ordering: >0 when ``a`` is newer than ``b``."""
    sa, sb = is_semver(a), is_semver(b)
    if sa and sb:
        return compare_semver(a, b)
    if sa != sb:
        return 1 if sa else -1
    return _cmp(published_a, published_b)


def looks_like_range(version: str) -> bool:
    v = version.strip()
    if v in ("*", "x", "X"):
        return True
    if v[:1] in ("^", "~", ">", "<", "="):
        return True
    if "*" in v or "||" in v or " - " in v:
        return True
    core = re.split(r"[-+]", v, maxsplit=1)[0]
    return any(part in ("x", "X") for part in core.split("."))


def check_version(version: str) -> str:
    """Refuse what cannot be a concrete, URL-safe version, saying why."""
    if not version:
        raise BadRequest("version must not be empty")
    if len(version) > MAX_VERSION_LENGTH:
        raise BadRequest(f"version is longer than {MAX_VERSION_LENGTH} characters")
    if version == "latest":
        raise BadRequest("'latest' is reserved: publish a concrete version such as 1.0.0")
    if looks_like_range(version):
        raise BadRequest(f"version {version!r} looks like a range: publish one concrete version such as 1.2.3")
    if _BAD_CHARS.search(version) or version in (".", ".."):
        raise BadRequest("version must not contain whitespace, slashes or control characters")
    return version
