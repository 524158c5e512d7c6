"""Sandbox templates: the Python interpreter and the packages a sandbox starts with.

A template is the host's read-only /usr plus, optionally, a site-packages directory
built offline from a local wheelhouse (air-gapped installs), bound read-only at
/opt/garrison/site-packages. Templates live in ``<data dir>/sandbox/templates/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
DEFAULT_TEMPLATE = "python"


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


class TemplateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> Template:
        if not NAME_RE.match(name or ""):
            raise TemplateError(f"template name {name!r} must match {NAME_RE.pattern}")
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
        raise TemplateError(f"no sandbox template named {name!r}; add one with `garrison sandbox template add`")

    def names(self) -> list[str]:
        found = {DEFAULT_TEMPLATE}
        if self.root.is_dir():
            found |= {p.parent.name for p in self.root.glob("*/template.json")}
        return sorted(found)

    def build(self, name: str, wheelhouse: Path, packages: list[str], env: dict[str, str] | None = None) -> Template:
        """Installs ``packages`` from ``wheelhouse`` only (``--no-index``: never the network)."""
        if not NAME_RE.match(name):
            raise TemplateError(f"template name {name!r} must match {NAME_RE.pattern}")
        target = self.root / name
        site = target / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        if packages:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                 "--target", str(site), "--no-compile", "--disable-pip-version-check", *packages],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise TemplateError(f"pip could not install {packages} from {wheelhouse}: {proc.stderr[-2000:]}")
        # World-readable: the sandbox runs as an unprivileged user.
        for p in [target, *target.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (target / "template.json").write_text(json.dumps({"packages": packages, "env": env or {}}))
        return self.get(name)
