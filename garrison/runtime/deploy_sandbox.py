"""Deploying a LangGraph version that runs in sandboxes (``isolation = "sandbox"``).

Its template (``graph-<digest>``) holds, read-only at /opt/garrison/site-packages: garrison's
own LangGraph and everything it imports (copied once from garrison's environment into the deps
cache: an air-gapped install already has them, and the sandbox's Python is the same minor
version), the version's own dependencies from the wheelhouse, its code under
``__garrison_agent__/``, and the step runner (``runtime/sandbox_runner.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from garrison.core.errors import BadRequest, ServiceUnavailable
from garrison.core.principal import Principal
from garrison.runtime import deps
from garrison.runtime.graphs import GraphLoadFailed

RUNNER_FILE = "__garrison_runner__.py"
ISOLATION_MARKER = ".garrison-isolation"  # in a sandboxed version's directory (not its bundle digest)
ISOLATIONS = ("process", "sandbox")


def isolation_of(bundle: Path, default: str, allow_process: bool = True) -> str:
    """``[agent] isolation`` of the bundle's agent.toml, else ``default`` ("sandbox" where "process" is
    not allowed); asking for "process" where it is not allowed is refused."""
    value: Any = default if allow_process else "sandbox"
    toml_path = bundle / "agent.toml"
    if toml_path.is_file():
        try:
            agent = tomllib.loads(toml_path.read_text()).get("agent") or {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            agent = {}  # read_descriptor reports the broken file
        value = agent.get("isolation", value) if isinstance(agent, dict) else value
        if value not in ISOLATIONS:
            raise BadRequest(f"agent.toml: [agent] isolation must be one of {list(ISOLATIONS)}, not {value!r}")
    if value == "process" and not allow_process:
        raise BadRequest("this garrison runs LangGraph agents in sandboxes only (GARRISON_RUNTIME_GRAPH_ALLOW_PROCESS"
                         "=false): remove isolation = \"process\" from agent.toml", slug="isolation-required")
    return str(value)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(top: str = "langgraph") -> list[md.Distribution]:
    """``top`` and every distribution it needs, as installed in garrison's own environment."""
    seen: dict[str, md.Distribution] = {}
    todo = [top]
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional dependency garrison does not have: the graph cannot need it either
        seen[name] = dist
        for raw in dist.requires or []:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return sorted(seen.values(), key=lambda d: _norm(d.metadata["Name"]))


def _closure_key(dists: list[md.Distribution]) -> str:
    ident = [(_norm(d.metadata["Name"]), d.version) for d in dists]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def build_runtime(cache: Path) -> Path:
    """A site-packages with garrison's LangGraph closure (copied once per set of versions)."""
    dists = runtime_closure()
    target = cache / f"langgraph-runtime-{_closure_key(dists)}"
    if (target / ".complete").is_file():
        return target
    staging = cache / f".staging-{uuid.uuid4().hex}"
    try:
        for dist in dists:
            for rel in dist.files or []:
                src = Path(str(dist.locate_file(rel))).resolve()
                if rel.parts and (rel.parts[0] == ".." or rel.suffix == ".pyc") or not src.is_file():
                    continue  # scripts outside site-packages, bytecode
                dst = staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                dst.chmod(0o644)
        compile_tree(staging)
        (staging / ".complete").write_text("\n".join(f"{d.metadata['Name']}=={d.version}" for d in dists))
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").is_file():
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def compile_tree(root: Path) -> None:
    """Bytecode for the sandbox's own Python, made once here: the template is read-only, so a
    sandbox could not cache it, and every fresh session sandbox would compile LangGraph anew."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([deps.SANDBOX_PYTHON, "-m", "compileall", "-q", "-j", "0", str(root)],
                       capture_output=True, timeout=600, check=False)


def _link_into(src: Path, dst: Path) -> None:
    """Hard links of ``src``'s files under ``dst`` (copies across file systems); existing files win."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        out = dst / rel
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.is_file() and path.name != ".complete" and not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, out)
            except OSError:
                shutil.copy2(path, out)


def build_template(templates_root: Path, name: str, runtime: Path, installed: Path, bundle: Path,
                   reqs: list[str]) -> None:
    target = templates_root / name
    if (target / "template.json").is_file():
        return
    staging = templates_root / f".{name}-{uuid.uuid4().hex}"
    try:
        site = staging / "site-packages"
        site.mkdir(parents=True)
        _link_into(installed, site)  # the version's own pins first
        _link_into(runtime, site)  # then what the runner needs and the version did not bring
        shutil.copytree(bundle, site / deps.AGENT_DIR, ignore=shutil.ignore_patterns("__pycache__", ".git", ".venv"))
        shutil.copyfile(Path(__file__).with_name("sandbox_runner.py"), site / RUNNER_FILE)
        compile_tree(site / deps.AGENT_DIR)
        for path in [staging, *staging.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
            elif path.is_file() and not path.stat().st_mode & 0o004:
                path.chmod(0o644)  # world-readable: the sandbox runs unprivileged
        deps.publish_template(staging, target, reqs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def check_in_sandbox(platform: Any, template: str, principal: Principal, refs: list[str]) -> None:
    """Import every graph of the version once, in a throwaway sandbox of its template (never in
    garrison's process), so a broken bundle never becomes a version."""
    from garrison.runtime.sessions import SessionSettings
    from garrison.sandbox.schemas import CreateIn, LimitsIn

    sandbox = platform.services["sandbox"]
    settings = SessionSettings()
    checker = Principal(id=f"runtime/deploy/{principal.id}"[:200], tenant_id=principal.tenant_id, kind="service",
                        scopes=frozenset({"sandbox:create", "sandbox:delete", "sandbox:exec"}),
                        name="agent deploy check")
    sbx = await sandbox.create(checker, CreateIn(template=template, backend=settings.backend, timeout_s=600,
                                                 idle_timeout_s=600, pooled=False,
                                                 limits=LimitsIn(memory_mib=settings.memory_mib, pids=settings.pids),
                                                 metadata={"runtime_deploy_check": template}))
    try:
        out = await sandbox.run_command(checker, sbx.id, [settings.python, f"{deps.IN_SANDBOX}/{RUNNER_FILE}",
                                                          "--check", *refs],
                                        envs={"GARRISON_AGENT_ROOT": f"{deps.IN_SANDBOX}/{deps.AGENT_DIR}"},
                                        timeout_s=settings.start_timeout_s)
    finally:
        await sandbox.terminate(sbx, "deploy_check_done")
    if out.get("exit_code") != 0:
        raise GraphLoadFailed(f"the graph did not import in its sandbox: {(out.get('stderr') or '').strip()[-1500:]}")


async def prepare(platform: Any, bundle: Path, digest: str, principal: Principal,
                  graphs: dict[str, str]) -> dict[str, Any]:
    """Descriptor fields of a sandboxed LangGraph version (its template built and checked now)."""
    settings = deps.DepsSettings()
    sandbox = platform.services.get("sandbox")
    if sandbox is None:
        raise ServiceUnavailable("the sandbox layer is not installed: isolation = \"sandbox\" needs it",
                                 slug="sandbox-unavailable")
    data_dir = Path(platform.settings.data_dir)
    wheelhouse = settings.wheelhouse or data_dir / "wheelhouse"
    cache = settings.deps_cache or data_dir / "runtime" / "deps"
    reqs = await asyncio.to_thread(deps.requirements, bundle)
    installed = await asyncio.to_thread(deps.install, reqs, wheelhouse, cache, settings.pip_timeout_s)
    runtime = await asyncio.to_thread(build_runtime, cache)
    runner = Path(__file__).with_name("sandbox_runner.py").read_bytes()
    # Named by the bundle and the runner: a garrison with another runner builds its own.
    name = "graph-" + hashlib.sha256(digest.encode() + runner).hexdigest()[:16]
    await asyncio.to_thread(build_template, sandbox.templates.root, name, runtime, installed, bundle, reqs)
    await check_in_sandbox(platform, name, principal, sorted(set(graphs.values())))
    return {"isolation": "sandbox", "template": name, "requirements": reqs}
