"""Bundle unpacking and descriptors, without a server: hostile archives never touch the disk outside."""

from __future__ import annotations

import io
import tarfile

import pytest

from garrison.core.errors import BadRequest, PayloadTooLarge
from garrison.runtime import bundles, graphs
from runtime.helpers import AGENTS


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("body,needle", [
    (b"not a tarball", "tar.gz"),
    (_tar([_file("../escape.py", b"x = 1")]), "escapes"),
    (_tar([_file("/etc/evil.py", b"x = 1")]), "escapes"),
    (_tar([_file("a/../../evil.py", b"x = 1")]), "escapes"),
    (_tar([_link("graph.py", "/etc/passwd")]), "link"),
    (_tar([_link("graph.py", "/etc/passwd", tarfile.LNKTYPE)]), "link"),
])
def test_hostile_archives_are_refused_and_leave_no_files(tmp_path, body, needle):
    target = tmp_path / "v1"
    with pytest.raises(BadRequest) as err:
        bundles.unpack(body, target, 1024 * 1024)
    assert needle in err.value.detail
    assert not target.exists() and not (tmp_path / "escape.py").exists()


def test_size_limits(tmp_path):
    with pytest.raises(PayloadTooLarge):
        bundles.unpack(b"x" * 2048, tmp_path / "v1", 1024)
    bomb = _tar([_file("big.bin", b"\0" * 200_000)])  # compresses to almost nothing
    with pytest.raises(PayloadTooLarge):
        bundles.unpack(bomb, tmp_path / "v2", 20_000)


@pytest.mark.parametrize("files,needle", [
    ({"readme.txt": "hello"}, "descriptor"),
    ({"langgraph.json": "{not json"}, "langgraph.json"),
    ({"langgraph.json": "[1]"}, "object"),
    ({"langgraph.json": '{"graphs": {}}'}, "graphs"),
    ({"langgraph.json": '{"graphs": {"g": "../up.py:graph"}}'}, "inside the bundle"),
    ({"langgraph.json": '{"graphs": {"bad name": "g.py:graph"}}'}, "graph name"),
    ({"agent.toml": "[graphs\n"}, "TOML"),
    ({"agent.toml": "[agent]\nkind = 'docker'\n"}, "kind"),
])
def test_broken_descriptors_say_what_to_fix(tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(BadRequest) as err:
        bundles.read_descriptor(tmp_path)
    assert needle in err.value.detail


def test_descriptors_of_each_kind(tmp_path):
    assert bundles.read_descriptor(AGENTS / "steps")["graphs"] == {"steps": "graph.py:graph",
                                                                   "approval": "graph.py:approval"}
    toml = bundles.read_descriptor(AGENTS / "versioned")
    assert toml["source"] == "agent.toml" and toml["graphs"] == {"versioned": "graph.py:graph"}
    (tmp_path / "main.py").write_text("from bedrock_agentcore import BedrockAgentCoreApp\napp = BedrockAgentCoreApp()\n")
    assert bundles.read_descriptor(tmp_path)["kind"] == "agentcore"


def test_pack_then_unpack_round_trips_and_versions_are_read_only(tmp_path):
    data = bundles.pack(AGENTS / "steps")
    assert bundles.pack(AGENTS / "steps") == data  # deterministic: same code, same digest
    digest = bundles.unpack(data, tmp_path / "v1", 10 * 1024 * 1024)
    assert len(digest) == 64
    assert (tmp_path / "v1" / "graph.py").read_text() == (AGENTS / "steps" / "graph.py").read_text()
    assert not (tmp_path / "v1" / "graph.py").stat().st_mode & 0o222


@pytest.mark.parametrize("source,needle", [
    ("raise SystemExit(3)", "importing"),
    ("import not_a_module_anywhere", "importing"),
    ("graph = 42", "not a LangGraph graph"),
    ("x = 1", "defines no"),
])
def test_graphs_that_cannot_load_are_reported(tmp_path, source, needle):
    (tmp_path / "g.py").write_text(source)
    with pytest.raises(graphs.GraphLoadFailed) as err:
        graphs.check_loads(tmp_path, {"g": "g.py:graph"})
    assert needle in err.value.detail
