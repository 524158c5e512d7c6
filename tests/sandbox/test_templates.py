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


# ---------------------------------------------------------------- /api/sandbox-templates


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    make_wheel(wheels)
    return wheels


async def test_templates_api_add_use_remove(client, platform, make_key, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.sandbox.helpers import make_backend

    make_backend("bubblewrap", tmp_path / "probe")
    platform.services["sandbox"].settings.wheelhouse = str(wheelhouse)
    listed = (await client.get("/api/sandbox-templates")).json()["items"]
    assert [t["name"] for t in listed] == ["python"] and listed[0]["builtin"] is True
    body = {"name": "demo", "packages": ["garrison_demo_pkg==1.0"], "env": {"DEMO_MODE": "on"}}
    r = await client.post("/api/sandbox-templates", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["installed"] == {"garrison_demo_pkg": "1.0"} and r.json()["builtin"] is False
    assert (await client.post("/api/sandbox-templates", json=body)).status_code == 409
    assert (await client.get("/api/sandbox-templates/demo")).json()["packages"] == ["garrison_demo_pkg==1.0"]
    # Requirements only, from the wheelhouse only: a pip option or an absent package is a 4xx.
    r = await client.post("/api/sandbox-templates", json={"name": "evil", "packages": ["--index-url=http://x"]})
    assert r.status_code == 422 and "pip options" in r.text
    r = await client.post("/api/sandbox-templates", json={"name": "absent", "packages": ["not_in_wheelhouse"]})
    assert r.status_code == 400 and "wheelhouse" in r.json()["detail"]
    assert (await client.get("/api/sandbox-templates/absent")).status_code == 404
    # Shared by every tenant: only an operator admin changes them.
    other_admin = await make_key(["admin:*"], tenant="acme")
    r = await client.post("/api/sandbox-templates", json={"name": "mine"},
                          headers={"authorization": f"Bearer {other_admin}"})
    assert r.status_code == 403 and "operator" in r.json()["detail"]
    reader = await make_key(["sandbox:read", "sandbox:create"], tenant="acme")
    assert (await client.delete("/api/sandbox-templates/demo",
                                headers={"authorization": f"Bearer {reader}"})).status_code == 403
    r = await client.get("/api/sandbox-templates", headers={"authorization": f"Bearer {reader}"})
    assert {t["name"] for t in r.json()["items"]} == {"python", "demo"}

    r = await client.post("/api/sandboxes", json={"backend": "bubblewrap", "template": "demo"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    code = ("import os, garrison_demo_pkg\n"
            "try:\n    open('/opt/garrison/site-packages/x', 'w'); ro = False\nexcept OSError:\n    ro = True\n"
            "(garrison_demo_pkg.ANSWER, os.environ['DEMO_MODE'], ro)")
    r = await client.post(f"/api/sandboxes/{sid}/run_code", json={"code": code})
    assert r.json()["text"] == "(42, 'on', True)", r.json()
    r = await client.delete("/api/sandbox-templates/demo")
    assert r.status_code == 409 and "running" in r.json()["detail"]
    await client.delete(f"/api/sandboxes/{sid}")
    assert (await client.delete("/api/sandbox-templates/demo")).status_code == 204
    assert (await client.get("/api/sandbox-templates/demo")).status_code == 404
    assert (await client.delete("/api/sandbox-templates/python")).status_code == 409
    r = await client.post("/api/sandboxes", json={"backend": "bubblewrap", "template": "demo"})
    assert r.status_code == 400 and "no sandbox template" in r.json()["detail"]
    await platform.audit.flush()
    actions = [e["action"] for e in await platform.audit.tail(100)]
    assert "sandbox:template:create" in actions and "sandbox:template:delete" in actions


@pytest.mark.slow  # a real `garrison up` (~15 s)
def test_default_template_packages_come_from_the_wheelhouse(wheelhouse: Path, tmp_path: Path) -> None:
    """`garrison up` with GARRISON_SANDBOX_DEFAULT_PACKAGES: the default template has them
    (air-gapped install, read-only mount); `garrison sandbox templates` adds and removes."""
    import json as _json

    from typer.testing import CliRunner

    from garrison.cli.sandbox import app
    from garrison.client.sandbox import Sandbox
    from tests.sandbox.helpers import make_backend
    from tests.support.live import start_server, stop_server

    make_backend("bubblewrap", tmp_path / "probe")
    data = tmp_path / "data"
    data.mkdir()
    server = start_server(data, extra_env={"GARRISON_SANDBOX_WHEELHOUSE": str(wheelhouse),
                                           "GARRISON_SANDBOX_DEFAULT_PACKAGES": '["garrison_demo_pkg"]',
                                           "GARRISON_SANDBOX_BACKEND": "bubblewrap"})
    try:
        with Sandbox.create(api_key=server.admin_key, url=server.url) as sbx:
            assert sbx.run_code("import garrison_demo_pkg\ngarrison_demo_pkg.ANSWER").text == "42"
        cli = CliRunner()
        auth = ["--url", server.url, "--key", server.admin_key]
        out = cli.invoke(app, ["templates", "list", "--format", "json", *auth])
        assert out.exit_code == 0, out.output
        rows = {t["name"]: t for t in _json.loads(out.output)}
        assert rows["python"]["packages"] == "garrison_demo_pkg"
        out = cli.invoke(app, ["templates", "add", "extra", "garrison_demo_pkg", "--env", "A=1", *auth])
        assert out.exit_code == 0 and "garrison_demo_pkg 1.0" in out.output, out.output
        out = cli.invoke(app, ["templates", "add", "broken", "nope_pkg", *auth])
        assert out.exit_code == 1 and "wheelhouse" in out.output
        assert cli.invoke(app, ["templates", "remove", "extra", *auth]).exit_code == 0
        out = cli.invoke(app, ["templates", "list", "--format", "json", *auth])
        assert {t["name"] for t in _json.loads(out.output)} == {"python"}
    finally:
        stop_server(server)
