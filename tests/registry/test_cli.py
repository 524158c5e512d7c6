"""`garrison registry sync|export|import` between two real garrison servers."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.config import Settings
from tests.registry.live import live_server


def _server(tmp_path, name):
    d = tmp_path / name
    return live_server(Settings(data_dir=d, database_url=f"sqlite+aiosqlite:///{d}/g.db"))


def test_sync_export_import(tmp_path):
    runner = CliRunner()
    with _server(tmp_path, "source") as (src, src_app), _server(tmp_path, "target") as (dst, dst_app):
        src_key = src_app.state.platform.bootstrap_key
        dst_key = dst_app.state.platform.bootstrap_key
        for i in range(3):
            doc = {"name": f"io.github.acme/s{i}", "description": "d", "version": "1.0.0"}
            httpx.post(f"{src}/v0.1/publish", json=doc, headers={"Authorization": f"Bearer {src_key}"}).raise_for_status()
        out = runner.invoke(app, ["registry", "sync", "--from", src, "--source-key", src_key,
                                  "--url", dst, "--key", dst_key])
        assert out.exit_code == 0, out.output
        assert "fetched 3 entries" in out.output and "imported 3" in out.output
        snapshot = tmp_path / "snap.json"
        out = runner.invoke(app, ["registry", "export", str(snapshot), "--url", dst, "--key", dst_key])
        assert out.exit_code == 0, out.output
        names = sorted(s["server"]["name"] for s in json.loads(snapshot.read_text())["servers"])
        assert names == [f"io.github.acme/s{i}" for i in range(3)]
        out = runner.invoke(app, ["registry", "import", str(snapshot), "--url", dst, "--key", dst_key])
        assert out.exit_code == 0 and "already present 3" in out.output
        out = runner.invoke(app, ["registry", "sync", "--from", "http://127.0.0.1:9", "--url", dst, "--key", dst_key])
        assert out.exit_code == 1 and "cannot read" in out.output
        bad = tmp_path / "bad.json"
        bad.write_text("{nope")
        out = runner.invoke(app, ["registry", "import", str(bad), "--url", dst, "--key", dst_key])
        assert out.exit_code == 2
