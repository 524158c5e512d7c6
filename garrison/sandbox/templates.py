"""Sandbox templates: the Python interpreter and the packages a sandbox starts with.

A template is the host's read-only /usr plus, optionally, a site-packages directory
built offline from a local wheelhouse (air-gapped installs: ``pip --no-index
--find-links``, wheels only), bound read-only at /opt/garrison/site-packages.
Templates live in ``<data dir>/sandbox/templates/<name>/``. A build goes to a
temporary directory and is renamed into place, so no sandbox sees half a template.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# A requirement, never a pip option: name, optional extras, optional version constraint.
PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(\[[A-Za-z0-9._,-]{1,100}\])?"
                        r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!_-]{1,50})?$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DEFAULT_TEMPLATE = "python"
MAX_PACKAGES = 100
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Template:
    name: str
    python: str = "/usr/bin/python3"
    site_packages: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.python, str(self.site_packages), sorted(self.env.items()),
                             list(self.packages)]).encode())
        return h.hexdigest()[:16]


class TemplateError(ValueError):
    pass


class TemplateExists(TemplateError):
    pass


def check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise TemplateError(f"template name {name!r} must match {NAME_RE.pattern}")


def check_packages(packages: list[str]) -> None:
    if len(packages) > MAX_PACKAGES:
        raise TemplateError(f"at most {MAX_PACKAGES} packages per template")
    for p in packages:
        if not PACKAGE_RE.match(p):
            raise TemplateError(f"package {p!r} is not a requirement like 'name', 'name==1.2' or "
                                "'name[extra]>=1'; pip options are not accepted")


def check_env(env: dict[str, str]) -> None:
    if len(env) > 64:
        raise TemplateError("at most 64 template environment variables")
    for k, v in env.items():
        if not ENV_KEY_RE.match(k):
            raise TemplateError(f"environment variable name {k!r} must match {ENV_KEY_RE.pattern}")
        if len(v) > 4096 or "\x00" in v:
            raise TemplateError(f"environment variable {k} is over 4096 characters or holds a NUL")


class TemplateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> Template:
        check_name(name)
        meta = self.root / name / "template.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            site = self.root / name / "site-packages"
            return Template(
                name=name,
                python=data.get("python", "/usr/bin/python3"),
                site_packages=site if site.is_dir() else None,
                env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
                packages=tuple(data.get("packages") or ()),
            )
        if name == DEFAULT_TEMPLATE:
            return Template(name=DEFAULT_TEMPLATE)
        raise TemplateError(f"no sandbox template named {name!r}; add one with `garrison sandbox templates add`")

    def exists(self, name: str) -> bool:
        return (self.root / name / "template.json").is_file()

    def names(self) -> list[str]:
        found = {DEFAULT_TEMPLATE}
        if self.root.is_dir():
            found |= {p.parent.name for p in self.root.glob("*/template.json") if NAME_RE.match(p.parent.name)}
        return sorted(found)

    def describe(self, name: str) -> dict[str, Any]:
        t = self.get(name)
        meta = self.root / name / "template.json"
        data = json.loads(meta.read_text()) if meta.is_file() else {}
        return {"name": t.name, "python": t.python, "packages": list(t.packages), "env": dict(t.env),
                "builtin": name == DEFAULT_TEMPLATE, "fingerprint": t.fingerprint(),
                "installed": data.get("installed", {}), "created_at": data.get("created_at")}

    def build(self, name: str, wheelhouse: Path, packages: list[str], env: dict[str, str] | None = None,
              *, replace: bool = False, python: str = "/usr/bin/python3") -> Template:
        """Installs ``packages`` from ``wheelhouse`` only (``--no-index``, wheels only:
        never the network, never a package's build script). Blocking: run it in a thread."""
        check_name(name)
        check_packages(packages)
        check_env(env or {})
        if self.exists(name) and not replace:
            raise TemplateExists(f"template {name!r} already exists; remove it first")
        if packages and not wheelhouse.is_dir():
            raise TemplateError(f"no wheelhouse directory at {wheelhouse} (set GARRISON_SANDBOX_WHEELHOUSE)")
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f".build-{name}-{os.getpid()}-{time.monotonic_ns()}"
        site = work / "site-packages"
        site.mkdir(parents=True)
        try:
            installed: dict[str, str] = {}
            if packages:
                proc = subprocess.run(
                    [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--find-links",
                     str(wheelhouse), "--only-binary=:all:", "--target", str(site), "--no-compile",
                     "--disable-pip-version-check", "--no-warn-script-location", *packages],
                    capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_S,
                    env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
                )
                if proc.returncode != 0:
                    tail = "\n".join(line for line in proc.stderr.splitlines() if "ERROR" in line)[-1500:]
                    raise TemplateError(f"pip could not install {packages} from the wheelhouse {wheelhouse}: "
                                        f"{tail or proc.stderr[-1500:]}")
                installed = dict(tuple(p.name.removesuffix(".dist-info").split("-", 1))  # type: ignore[misc]
                                 for p in site.glob("*.dist-info") if "-" in p.name)
                # Bytecode by the template's own interpreter: the mount is read-only, so a
                # sandbox could never cache it and would compile every import every time.
                subprocess.run([python, "-I", "-m", "compileall", "-q", str(site)], capture_output=True,
                               check=False, timeout=PIP_TIMEOUT_S, env={"PATH": "/usr/bin:/bin"})
            # World-readable, nothing writable: the sandbox runs as an unprivileged user.
            for p in [work, *work.rglob("*")]:
                if not p.is_symlink():
                    p.chmod(0o755 if p.is_dir() else 0o644)
            (work / "template.json").write_text(json.dumps({
                "packages": packages, "env": env or {}, "python": python, "installed": installed,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
            (work / "template.json").chmod(0o644)
            target = self.root / name
            if target.exists():
                trash = self.root / f".trash-{name}-{time.monotonic_ns()}"
                target.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.get(name)

    def remove(self, name: str) -> None:
        check_name(name)
        target = self.root / name
        if not self.exists(name):
            raise TemplateError(f"no sandbox template named {name!r}")
        trash = self.root / f".trash-{name}-{time.monotonic_ns()}"
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
