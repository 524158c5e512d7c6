"""A version's dependencies, installed offline from a wheelhouse at deploy time.

``requirements.txt`` (or ``[project].dependencies`` of ``pyproject.toml``) is installed with
``pip install --no-index --find-links <wheelhouse> --target <dir>``: never the network. The
result becomes a sandbox template (``agent-<digest>``) whose read-only site-packages holds
the dependencies and, under ``__garrison_agent__/``, the version's own code; every session
sandbox of the version mounts it read-only at /opt/garrison/site-packages.

Installs are cached by what they contain (requirements and wheelhouse listing), so ten
versions with the same requirements install once; a template is a hard-linked copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings
from garrison.core.errors import BadRequest, ServiceUnavailable

AGENT_DIR = "__garrison_agent__"
IN_SANDBOX = "/opt/garrison/site-packages"
SANDBOX_PYTHON = "/usr/bin/python3"  # the sandbox templates' interpreter (garrison/sandbox/templates.py)
REQ_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\s*([<>=!~]=?[^;#\s]*(\s*,\s*[<>=!~]=?[^;#\s]*)*)?"
                    r"(\s*;.*)?$")
MISSING_RE = re.compile(r"No matching distribution found for ([^\s]+)")


class DepsSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_RUNTIME_", extra="ignore")

    # Where wheels come from (no index, no network); unset: <data dir>/wheelhouse.
    wheelhouse: Path | None = None
    # Installed dependency sets, shared by versions with the same requirements; unset: <data dir>/runtime/deps.
    deps_cache: Path | None = None
    pip_timeout_s: float = 600.0


def requirements(bundle: Path) -> list[str]:
    """The bundle's declared dependencies, as pip requirement strings."""
    req_txt, pyproject = bundle / "requirements.txt", bundle / "pyproject.toml"
    out: list[str] = []
    if req_txt.is_file():
        for number, line in enumerate(req_txt.read_text(errors="replace").splitlines(), 1):
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-") or not REQ_RE.match(line):
                raise BadRequest(f"requirements.txt line {number} ({line[:80]!r}): list package requirements only "
                                 "(name and version specifiers); options, URLs and paths are not supported offline")
            out.append(line)
    elif pyproject.is_file():
        try:
            doc = tomllib.loads(pyproject.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"pyproject.toml is not valid TOML: {exc}") from exc
        deps = (doc.get("project") or {}).get("dependencies") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) and REQ_RE.match(d.strip()) for d in deps):
            raise BadRequest("pyproject.toml: [project].dependencies must be a list of requirement strings")
        out = [d.strip() for d in deps]
    return out


def sandbox_python_version(python: str = SANDBOX_PYTHON) -> str:
    """``X.Y`` of the interpreter sessions run (wheels with C extensions must match it)."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "{}.{}".format(*sys.version_info[:2])


def _cache_key(reqs: list[str], wheelhouse: Path, version: str) -> str:
    listing = sorted(p.name for p in wheelhouse.iterdir()) if wheelhouse.is_dir() else []
    return hashlib.sha256(json.dumps([sorted(reqs), listing, version]).encode()).hexdigest()[:24]


def install(reqs: list[str], wheelhouse: Path, cache: Path, timeout_s: float) -> Path:
    """The installed site-packages for ``reqs`` (installed now unless cached)."""
    version = sandbox_python_version()
    target = cache / _cache_key(reqs, wheelhouse, version)
    if (target / ".complete").is_file():
        return target
    if reqs and not wheelhouse.is_dir():
        raise BadRequest(f"this agent declares dependencies {reqs} but the wheelhouse {wheelhouse} does not exist; "
                         "fill it with `pip download -r requirements.txt -d <wheelhouse>` and set "
                         "GARRISON_RUNTIME_WHEELHOUSE")
    staging = cache / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        if reqs:
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                     "--target", str(staging), "--disable-pip-version-check", "--no-warn-script-location",
                     "--quiet", *_for_version(version), *reqs],
                    capture_output=True, text=True, check=False, timeout=timeout_s,
                    env={**os.environ, "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull})
            except subprocess.TimeoutExpired as exc:
                raise ServiceUnavailable(f"installing {reqs} took over {timeout_s} s") from exc
            if proc.returncode != 0:
                missing = MISSING_RE.findall(proc.stderr)
                if missing:
                    raise BadRequest(f"the wheelhouse {wheelhouse} has no distribution for {', '.join(missing)}: add "
                                     f"its wheel (pip download {' '.join(missing)} -d {wheelhouse}) and deploy again",
                                     slug="missing-dependency")
                raise BadRequest(f"pip could not install {reqs} from the wheelhouse: {proc.stderr.strip()[-1500:]}",
                                 slug="dependency-install-failed")
        (staging / ".complete").write_text(json.dumps(reqs))
        try:
            staging.rename(target)
        except OSError:  # another deploy installed the same set meanwhile
            if not (target / ".complete").is_file():
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _for_version(version: str) -> list[str]:
    """Installing for another Python than garrison's own: binary wheels of that version only."""
    if version == "{}.{}".format(*sys.version_info[:2]):
        return []
    return ["--python-version", version, "--only-binary=:all:"]


def _link_tree(src: Path, dst: Path) -> None:
    """A copy of ``src`` made of hard links (falls back to copying across file systems)."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, ignore=shutil.ignore_patterns(".complete"))


def build_template(templates_root: Path, name: str, installed: Path, bundle: Path, reqs: list[str]) -> None:
    """``<templates>/<name>/site-packages``: the dependencies plus the code, world-readable (the
    sandbox runs unprivileged), and the template.json the sandbox layer reads."""
    target = templates_root / name
    if (target / "template.json").is_file():
        return
    staging = templates_root / f".{name}-{uuid.uuid4().hex}"
    try:
        _link_tree(installed, staging / "site-packages")
        shutil.copytree(bundle, staging / "site-packages" / AGENT_DIR,
                        ignore=shutil.ignore_patterns("__pycache__", ".git", ".venv"))
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        publish_template(staging, target, reqs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_template(staging: Path, target: Path, reqs: list[str]) -> None:
    """Moves a finished template into place in one rename; a concurrent deploy of the same
    content that got there first is as good."""
    (staging / "template.json").write_text(json.dumps({"packages": reqs, "env": {}}))
    try:
        staging.rename(target)
    except OSError:
        if not (target / "template.json").is_file():
            raise


async def prepare(platform: Any, bundle: Path, digest: str, settings: DepsSettings | None = None) -> dict[str, Any]:
    """Installs the version's dependencies and registers its sandbox template; returns descriptor fields."""
    settings = settings or DepsSettings()
    sandbox = platform.services.get("sandbox")
    if sandbox is None:
        raise ServiceUnavailable("the sandbox layer is not installed: AgentCore agents run in session sandboxes",
                                 slug="sandbox-unavailable")
    data_dir = Path(platform.settings.data_dir)
    wheelhouse = settings.wheelhouse or data_dir / "wheelhouse"
    cache = settings.deps_cache or data_dir / "runtime" / "deps"
    reqs = await asyncio.to_thread(requirements, bundle)
    installed = await asyncio.to_thread(install, reqs, wheelhouse, cache, settings.pip_timeout_s)
    name = f"agent-{digest[:16]}"
    await asyncio.to_thread(build_template, sandbox.templates.root, name, installed, bundle, reqs)
    return {"template": name, "requirements": reqs}
