"""GarrisonStore: LangGraph BaseStore with namespaces, TTL, filters and semantic search."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langgraph.store.base import InvalidNamespaceError, PutOp

from garrison.state.checkpoint.errors import InvalidConfig, ValueTooLarge
from garrison.state.memory.embedder import GatewayEmbedder, MiniLMEmbedder
from garrison.state.memory.store import GarrisonStore

MINILM = MiniLMEmbedder()


@pytest.fixture
def store(db_url: str) -> Iterator[GarrisonStore]:
    with GarrisonStore.from_conn_string(db_url, index={"dims": 384, "embed": MINILM, "fields": ["text"]}) as s:
        yield s


def test_put_get_delete_and_namespaces(store: GarrisonStore) -> None:
    store.put(("users", "u1", "prefs"), "diet", {"text": "vegetarian", "n": 1})
    store.put(("users", "u1", "facts"), "city", {"text": "lives in Lyon"})
    store.put(("users", "u2", "prefs"), "diet", {"text": "vegan"})
    got = store.get(("users", "u1", "prefs"), "diet")
    assert got is not None and got.value == {"text": "vegetarian", "n": 1} and got.namespace == ("users", "u1", "prefs")
    store.put(("users", "u1", "prefs"), "diet", {"text": "pescatarian"})
    updated = store.get(("users", "u1", "prefs"), "diet")
    assert updated is not None and updated.value["text"] == "pescatarian"
    assert updated.created_at == got.created_at and updated.updated_at >= got.updated_at
    assert store.list_namespaces(prefix=("users",)) == [("users", "u1", "facts"), ("users", "u1", "prefs"),
                                                       ("users", "u2", "prefs")]
    assert store.list_namespaces(prefix=("users",), max_depth=2) == [("users", "u1"), ("users", "u2")]
    assert store.list_namespaces(suffix=("prefs",)) == [("users", "u1", "prefs"), ("users", "u2", "prefs")]
    assert store.list_namespaces(prefix=("users", "*", "facts")) == [("users", "u1", "facts")]
    store.delete(("users", "u1", "prefs"), "diet")
    assert store.get(("users", "u1", "prefs"), "diet") is None
    assert store.get(("nobody",), "nothing") is None


def test_filters_and_pagination(store: GarrisonStore) -> None:
    for i in range(12):
        store.put(("docs",), f"d{i}", {"text": f"document {i}", "rank": i, "tag": "even" if i % 2 == 0 else "odd"},
                  index=False)
    evens = store.search(("docs",), filter={"tag": "even"}, limit=3)
    assert [e.value["rank"] for e in evens] == [10, 8, 6]  # newest first
    page2 = store.search(("docs",), filter={"tag": "even"}, limit=3, offset=3)
    assert [e.value["rank"] for e in page2] == [4, 2, 0]
    high = store.search(("docs",), filter={"rank": {"$gte": 9}}, limit=10)
    assert sorted(e.value["rank"] for e in high) == [9, 10, 11]
    with pytest.raises(InvalidConfig, match="unsupported filter operator"):
        store.search(("docs",), filter={"rank": {"$regex": ".*"}})


def test_semantic_search_ranks_by_meaning_within_the_namespace(store: GarrisonStore) -> None:
    ns = ("users", "u1", "memories")
    store.put(ns, "m1", {"text": "I love hiking in the mountains on weekends"})
    store.put(ns, "m2", {"text": "My favourite food is sushi"})
    store.put(ns, "m3", {"text": "The quarterly report is due on Tuesday"})
    store.put(("users", "u2", "memories"), "m1", {"text": "I enjoy trekking and climbing mountains"})
    hits = store.search(("users", "u1"), query="which outdoor activities does the user enjoy?", limit=3)
    assert [h.key for h in hits][0] == "m1"
    assert all(h.namespace[:2] == ("users", "u1") for h in hits)
    assert hits[0].score is not None and hits[0].score > hits[-1].score
    food = store.search(ns, query="what does the user like to eat", limit=1)
    assert food[0].key == "m2"
    # Re-putting an item replaces its vectors; deleting it removes them.
    store.put(ns, "m2", {"text": "Planning a trip to climb Mont Blanc"})
    climb = store.search(ns, query="mountain climbing", limit=2)
    assert {h.key for h in climb} == {"m1", "m2"}
    store.delete(ns, "m1")
    assert [h.key for h in store.search(ns, query="hiking", limit=5)] == ["m2", "m3"]


def test_ttl_expiry_refresh_and_sweep(db_url: str) -> None:
    with GarrisonStore.from_conn_string(db_url, ttl={"default_ttl": 0.03, "refresh_on_read": True}) as store:
        store.put(("s",), "short", {"v": 1})
        store.put(("s",), "forever", {"v": 2}, ttl=None)
        assert store.get(("s",), "short") is not None  # read refreshes the 1.8 s TTL
        time.sleep(2.2)
        assert store.get(("s",), "short") is None
        assert store.search(("s",)) and [i.key for i in store.search(("s",))] == ["forever"]
        assert store.list_namespaces() == [("s",)]
        assert store.sweep_ttl() == 1
        assert store.get(("s",), "forever") is not None


def test_bad_input_is_refused(store: GarrisonStore) -> None:
    with pytest.raises(InvalidNamespaceError):
        store.put(("a.b",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp(("ok", ""), "k", {"v": 1})])
    with pytest.raises(InvalidConfig, match="key"):
        store.put(("ns",), "k" * 600, {"v": 1})
    with pytest.raises(InvalidConfig, match="JSON object"):
        store.batch([PutOp(("ns",), "k", ["not", "a", "dict"])])  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="ttl"):
        store.put(("ns",), "k", {"v": 1}, ttl=-5)
    with pytest.raises(ValueTooLarge):
        store.for_tenant("t").put(("ns",), "big", {"blob": "x" * (5 * 1024 * 1024)})
    assert store.get(("ns",), "k") is None


def test_tenants_are_isolated(store: GarrisonStore) -> None:
    acme, other = store.for_tenant("acme"), store.for_tenant("other")
    acme.put(("memories",), "m", {"text": "acme's secret plan"})
    assert other.get(("memories",), "m") is None
    assert other.search(("memories",), query="secret plan") == []
    assert other.list_namespaces() == []
    other.delete(("memories",), "m")
    assert acme.get(("memories",), "m") is not None


async def test_async_batch(store: GarrisonStore) -> None:
    await store.aput(("a",), "k", {"text": "async write"})
    got = await store.aget(("a",), "k")
    assert got is not None and got.value["text"] == "async write"
    assert [h.key for h in await store.asearch(("a",), query="write")] == ["k"]


class _FakeEmbeddings(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/embeddings on a real socket: vectors from character counts."""

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert self.path == "/v1/embeddings" and self.headers["authorization"] == "Bearer gk_test"
        data = []
        for i, text in enumerate(body["input"]):
            vec = [float(text.lower().count(c)) + 0.01 for c in "abcdefgh"]
            data.append({"object": "embedding", "index": i, "embedding": vec})
        out = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


def test_pluggable_embedder_through_an_openai_compatible_endpoint(db_url: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    embedder = GatewayEmbedder(f"http://127.0.0.1:{server.server_address[1]}", "tiny", api_key="gk_test")
    try:
        with GarrisonStore.from_conn_string(db_url, index={"dims": 8, "embed": embedder}) as store:
            store.put(("n",), "aaa", {"t": "aaaa aaaa"})
            store.put(("n",), "hhh", {"t": "hhhh hhhh"})
            assert [h.key for h in store.search(("n",), query="aaa", limit=1)] == ["aaa"]
        with GarrisonStore.from_conn_string(db_url, index={"dims": 16, "embed": embedder}) as store:
            with pytest.raises(InvalidConfig, match="dims"):
                store.put(("n",), "x", {"t": "abc"})
    finally:
        embedder.close()
        server.shutdown()


def test_deep_pages_past_the_index_shortlist(store: GarrisonStore) -> None:
    from langgraph.store.base import PutOp

    store.batch([PutOp(("deep",), f"k{i}", {"text": f"note number {i}"}) for i in range(30)])
    assert store.search(("deep",), query="note", offset=5000, limit=10) == []
    page = store.search(("deep",), query="note", offset=25, limit=10)
    assert len(page) == 5


def test_two_processes_see_each_others_vectors(db_url: str) -> None:
    """Two stores on one database (as two garrison processes): searches see the other's writes."""
    index = {"dims": 384, "embed": MINILM, "fields": ["text"]}
    with GarrisonStore.from_conn_string(db_url, index=index) as a, \
            GarrisonStore.from_conn_string(db_url, index=index) as b:
        assert b.search(("n",), query="anything") == []  # b loads its (empty) copy of the index
        a.put(("n",), "volcano", {"text": "Etna is an active volcano in Sicily"})
        a.put(("n",), "pasta", {"text": "carbonara uses eggs and guanciale"})
        assert [h.key for h in b.search(("n",), query="eruption of a mountain", limit=1)] == ["volcano"]
        b.delete(("n",), "volcano")
        assert [h.key for h in a.search(("n",), query="eruption of a mountain", limit=2)] == ["pasta"]
