"""Agent bundles: a directory (or its tar.gz) with code and a descriptor, unpacked into an immutable version.

Descriptors, in order of preference: garrison's ``agent.toml``, LangGraph's
``langgraph.json``, or an AgentCore-style ``main.py`` built on ``BedrockAgentCoreApp``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import stat
import tarfile
import tomllib
from pathlib import Path
from typing import Any

from garrison.core.errors import BadRequest, PayloadTooLarge

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
GRAPH_REF_RE = re.compile(r"^\.?/?[A-Za-z0-9_./-]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
MAX_FILES = 2000


def check_name(name: str, what: str = "agent name") -> str:
    if not NAME_RE.match(name):
        raise BadRequest(f"{what} {name!r} is invalid: use 1-63 lowercase letters, digits and '-', "
                         "starting with a letter")
    return name


def _graphs(raw: Any, source: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise BadRequest(f"{source}: 'graphs' must map graph names to 'file.py:variable'")
    out: dict[str, str] = {}
    for graph_id, ref in raw.items():
        if isinstance(ref, dict):  # langgraph.json also allows {"path": ..., "description": ...}
            ref = ref.get("path")
        if not isinstance(graph_id, str) or not re.match(r"^[A-Za-z0-9_-]{1,64}$", graph_id):
            raise BadRequest(f"{source}: graph name {graph_id!r} must be 1-64 letters, digits, '_' or '-'")
        if not isinstance(ref, str) or not GRAPH_REF_RE.match(ref) or ".." in ref:
            raise BadRequest(f"{source}: graph {graph_id!r} must point at 'file.py:variable' inside the bundle")
        out[graph_id] = ref.removeprefix("./")
    return out


def read_descriptor(root: Path) -> dict[str, Any]:
    """What the bundle is: ``{"kind": "langgraph"|"agentcore", "graphs": {...}, "name": ...}``."""
    toml_path, lg_path, main_path = root / "agent.toml", root / "langgraph.json", root / "main.py"
    if toml_path.is_file():
        try:
            doc = tomllib.loads(toml_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"agent.toml is not valid TOML: {exc}") from exc
        agent = doc.get("agent", {}) if isinstance(doc.get("agent", {}), dict) else {}
        kind = agent.get("kind", "langgraph")
        if kind not in ("langgraph", "agentcore"):
            raise BadRequest("agent.toml: [agent] kind must be 'langgraph' or 'agentcore'")
        desc: dict[str, Any] = {"kind": kind, "source": "agent.toml", "name": agent.get("name"),
                                "description": agent.get("description")}
        if kind == "langgraph":
            desc["graphs"] = _graphs(doc.get("graphs"), "agent.toml")
        else:
            desc["entrypoint"] = agent.get("entrypoint", "main.py")
        return desc
    if lg_path.is_file():
        try:
            doc = json.loads(lg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"langgraph.json is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadRequest("langgraph.json must be a JSON object")
        return {"kind": "langgraph", "source": "langgraph.json", "graphs": _graphs(doc.get("graphs"), "langgraph.json"),
                "name": None, "description": None}
    if main_path.is_file() and "BedrockAgentCoreApp" in main_path.read_text(errors="replace"):
        return {"kind": "agentcore", "source": "main.py", "entrypoint": "main.py", "name": None, "description": None}
    raise BadRequest("no descriptor found: add agent.toml, langgraph.json, or a main.py using BedrockAgentCoreApp")


def pack(directory: Path) -> bytes:
    """A deterministic tar.gz of ``directory`` (what `garrison agents deploy` uploads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            rel = path.relative_to(directory)
            if any(part in ("__pycache__", ".git", ".venv") for part in rel.parts) or path.is_symlink():
                continue
            if path.is_file():
                info = tar.gettarinfo(str(path), arcname=str(rel))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    return buf.getvalue()


def unpack(data: bytes, target: Path, max_bytes: int) -> str:
    """Extract a tar.gz bundle into ``target`` safely; return its sha256."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"bundle is {len(data)} bytes; the limit is {max_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadRequest(f"bundle must be a tar.gz archive: {exc}") from exc
    total = 0
    target.mkdir(parents=True, exist_ok=False)
    try:
        with tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise BadRequest(f"bundle has {len(members)} entries; the limit is {MAX_FILES}")
            for member in members:
                total += max(member.size, 0)
                if total > max_bytes * 4:
                    raise PayloadTooLarge("bundle expands beyond the size limit")
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts:
                    raise BadRequest(f"bundle entry {member.name!r} escapes the bundle; use relative paths inside it")
                if not (member.isfile() or member.isdir()):
                    raise BadRequest(f"bundle entry {member.name!r} is a link or device; only files and folders")
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise BadRequest(f"bundle could not be extracted: {exc}") from exc
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    # Versions are immutable: read-only files.
    for path in target.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    return digest
