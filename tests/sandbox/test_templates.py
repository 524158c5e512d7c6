"""Templates built offline from a local wheelhouse (pip --no-index), used by a real sandbox."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from garrison.core.ids import new_id
from garrison.sandbox.backends.base import SandboxSpec
from garrison.sandbox.runtime import SandboxRuntime
from garrison.sandbox.templates import TemplateError, TemplateStore
from tests.sandbox.helpers import MiB, Runtimes


def make_wheel(directory: Path, name: str = "garrison_demo_pkg", version: str = "1.0") -> Path:
    """A real (pure Python) wheel, written by hand so the test needs no network."""
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


async def test_template_from_a_wheelhouse_is_importable_in_the_sandbox(rts: Runtimes, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    make_wheel(wheelhouse)
    store = TemplateStore(tmp_path / "templates")
    template = store.build("demo", wheelhouse, ["garrison_demo_pkg"])
    assert "demo" in store.names() and template.site_packages is not None
    spec = SandboxSpec(new_id("sbx"), template, 256 * MiB, 1.0, 128, 64 * MiB, 32 * MiB, MiB)
    rt = await SandboxRuntime.start(rts.backend, spec)
    rts.started.append(rt)
    out = await rt.conn.call("run_code", code="import garrison_demo_pkg\ngarrison_demo_pkg.ANSWER")
    assert out["text"] == "42", out
    with pytest.raises(TemplateError):
        store.build("missing", wheelhouse, ["not_in_the_wheelhouse"])
    with pytest.raises(TemplateError):
        store.get("../etc")
