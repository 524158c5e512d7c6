"""In-process cache of channel blobs (SQLite), and the one-call decode it makes possible.

A blob row is immutable once written (insert-if-absent under a version with 48
random bits), so a read needs only the checkpoint row and its writes and joins the
channel values from memory. The values are kept as msgpack map entries (name and
value bytes, already packed), so a checkpoint and all its channel values decode in
one ``ormsgpack.unpackb`` call: ``[checkpoint, {channel: value, ...}]``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import ormsgpack

from garrison.state.checkpoint import ops

_OUR_VERSION = re.compile(r"^\d{10}\.[0-9a-f]{12}$")
_ASSEMBLED_MAX = 4096
Key = tuple[str, str, str]


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 0x10000:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


class BlobCache:
    """Serialized channel blobs by (tenant, thread, ns, channel, version), FIFO-bounded by bytes.

    Only versions from ``ops.next_version`` are cached: their random part makes a
    key that names different bytes in another process practically impossible.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        # value: (type, blob, msgpack map entry = packed name + blob, or None if not msgpack)
        self._items: dict[tuple[str, ...], tuple[str, bytes | None, bytes | None]] = {}
        self._bytes = 0
        # Per (tenant, thread, ns): the channel_versions text last assembled, its packed map and
        # channel names. A thread read again at the same checkpoint skips parsing the versions.
        self._assembled: dict[Key, tuple[str, bytes, list[str]]] = {}
        self._lock = threading.Lock()

    def lookup(self, tenant: str, thread: str, ns: str,
               versions: dict[str, Any]) -> list[tuple[str, str, bytes | None]] | None:
        items = self._items
        out = []
        for channel, version in versions.items():
            hit = items.get((tenant, thread, ns, channel, version))
            if hit is None:
                return None
            out.append((channel, hit[0], hit[1]))
        return out

    def packed_map(self, tenant: str, thread: str, ns: str, versions_text: str) -> tuple[bytes, list[str]] | None:
        """The msgpack map of every channel of ``versions_text``, or None on a miss / non-msgpack value."""
        key = (tenant, thread, ns)
        done = self._assembled.get(key)
        if done is not None and done[0] == versions_text:
            return done[1], done[2]
        import orjson  # local: only on an assembly

        versions = orjson.loads(versions_text)
        items = self._items
        parts = [_map_header(len(versions))]
        names = []
        for channel, version in versions.items():
            hit = items.get((tenant, thread, ns, channel, version))
            if hit is None or hit[2] is None:
                return None
            parts.append(hit[2])
            names.append(channel)
        packed = b"".join(parts)
        with self._lock:
            if len(self._assembled) >= _ASSEMBLED_MAX:
                self._assembled.pop(next(iter(self._assembled)))
            self._assembled[key] = (versions_text, packed, names)
        return packed, names

    def fill(self, tenant: str, thread: str, ns: str, rows: Sequence[tuple[str, str, str, bytes | None]]) -> None:
        with self._lock:
            for channel, version, type_, blob in rows:
                if not _OUR_VERSION.match(version):
                    continue
                key = (tenant, thread, ns, channel, version)
                if key not in self._items:
                    entry = ormsgpack.packb(channel) + blob if type_ == "msgpack" and blob is not None else None
                    self._items[key] = (type_, blob, entry)
                    self._bytes += 2 * len(blob or b"") + 200
            while self._bytes > self.max_bytes and self._items:
                _type, old, _e = self._items.pop(next(iter(self._items)))
                self._bytes -= 2 * len(old or b"") + 200

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._assembled.clear()
            self._bytes = 0


class Inflated:
    """zstd-compressed checkpoint rows and their raw bytes, keyed by the compressed bytes.

    Content-addressed, so never stale: a row rewritten under the same id has other
    bytes. Filled by put (which has both) and by reads; saves the ~4 us zstd call
    per read of a checkpoint this process wrote or read before.
    """

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: dict[bytes, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, compressed: bytes, raw: bytes) -> None:
        with self._lock:
            if compressed in self._items:
                return
            self._items[compressed] = raw
            self._bytes += len(compressed) + len(raw) + 100
            while self._bytes > self.max_bytes and self._items:
                old = next(iter(self._items))
                self._bytes -= len(old) + len(self._items.pop(old)) + 100

    def inflate(self, compressed: bytes) -> bytes:
        raw = self._items.get(compressed)
        if raw is None:
            raw = ops._unzstd().decompress(compressed)
            self.keep(compressed, raw)
        return raw

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def decode_fast(s: ops.Scope, thread_id: str, ns: str, head: Sequence[Any], packed: bytes, names: list[str],
                writes: list[tuple[str, str, str, int, str, bytes]], inflated: Inflated) -> Any:
    """A CheckpointTuple from a head row (id, parent, type, data, meta) and a packed channel map.

    Returns None where this shortcut does not apply or the row does not decode as expected;
    the caller then takes the general path, which names what is wrong.
    """
    type_, data = head[2], head[3]
    if s._ext_hook is None:
        return None
    if type_ == "zstd:msgpack":
        try:
            data = inflated.inflate(data)
        except Exception:
            return None
    elif type_ != "msgpack":
        return None
    try:
        # [checkpoint, values]: a corrupt checkpoint shifts the map, which the name check catches.
        got = ormsgpack.unpackb(b"\x92" + data + packed, ext_hook=s._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
    except Exception:
        return None
    if not isinstance(got, list) or len(got) != 2:
        return None
    cp, values = got
    if (not isinstance(cp, dict) or not isinstance(cp.get("channel_values", {}), dict)
            or "channel_versions" not in cp or not isinstance(values, dict) or list(values) != names):
        return None
    cp.setdefault("channel_values", {})
    return ops.tuple_from_decoded(s, thread_id, ns, head, cp, values, writes)
