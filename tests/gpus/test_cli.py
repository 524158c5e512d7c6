"""`garrison gpus ...` end to end: offline (simulate, export from a trace) and against a server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from garrison.cli.main import app as cli
from garrison.gpus.launcher import LocalLauncher
from garrison.gpus.service import GpuService

from .test_kai import crd_schema

runner = CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The CLI talks HTTP; the store under it is covered on both engines by test_api."""
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def test_simulate_generated_trace_json_and_saved_trace(tmp_path: Path) -> None:
    saved = tmp_path / "trace.json"
    out = runner.invoke(cli, ["gpus", "simulate", "--generate", "4", "--gpus", "8", "--hours", "0.5",
                              "--json", "--save", str(saved)])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["gpus"] == 8 and report["garrison"]["partial_gangs"] == 0
    assert "fifo" in report and report["jobs"] == len(json.loads(saved.read_text())["jobs"])
    again = runner.invoke(cli, ["gpus", "simulate", "--trace", str(saved), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.output)["garrison"]["utilisation"] == report["garrison"]["utilisation"]
    table = runner.invoke(cli, ["gpus", "simulate", "--trace", str(saved)])
    assert table.exit_code == 0 and "utilisation" in table.output and "entitlement" in table.output


def test_simulate_refuses_bad_arguments(tmp_path: Path) -> None:
    assert runner.invoke(cli, ["gpus", "simulate"]).exit_code != 0
    assert runner.invoke(cli, ["gpus", "simulate", "--generate", "1", "--gpus", "0"]).exit_code != 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = runner.invoke(cli, ["gpus", "simulate", "--trace", str(bad)])
    assert out.exit_code == 2 and "cannot read trace" in out.output


def test_export_k8s_from_a_trace_validates(tmp_path: Path) -> None:
    saved = tmp_path / "trace.json"
    assert runner.invoke(cli, ["gpus", "simulate", "--generate", "2", "--hours", "0.2", "--json",
                               "--save", str(saved)]).exit_code == 0
    target = tmp_path / "kai.yaml"
    out = runner.invoke(cli, ["gpus", "export-k8s", "--trace", str(saved), "-n", "agents", "-o", str(target)])
    assert out.exit_code == 0, out.output
    docs = list(yaml.safe_load_all(target.read_text()))
    schemas = {"Queue": crd_schema("scheduling.run.ai_queues.yaml"),
               "PodGroup": crd_schema("scheduling.run.ai_podgroups.yaml")}
    assert {d["kind"] for d in docs} == {"Queue", "PodGroup", "Pod"}
    for d in docs:
        if d["kind"] in schemas:
            jsonschema.validate(d, schemas[d["kind"]])


async def test_submit_list_explain_cancel_against_a_server(garrison_url: str, admin_key: str, cluster: dict,
                                                           gpus: GpuService) -> None:
    base = ["--url", garrison_url, "--key", admin_key]
    gpus.launcher = LocalLauncher(gpus, Path(str(gpus.platform.settings.data_dir)) / "logs", node="n0")

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(runner.invoke, cli, ["gpus", args[0], *base, *args[1:]])

    out = await run("submit", "--queue", "ops-a", "--fraction", "0.5", "--class", "interactive",
                    "--name", "chat", "--", sys.executable, "-c", "import time; time.sleep(60)")
    assert out.exit_code == 0, out.output
    wid = out.output.split()[1]
    await gpus.run_cycle()
    listed = await run("list", "--format", "json")
    rows = json.loads(listed.output)
    assert rows[0]["id"] == wid and rows[0]["state"] == "running" and rows[0]["command"][0] == sys.executable
    assert gpus.launcher.is_running(wid)
    why = await run("explain", wid)
    assert why.exit_code == 0 and "why:" in why.output and "quota" in why.output
    assert (await run("cancel", wid)).exit_code == 0
    assert not gpus.launcher.is_running(wid)
    assert json.loads((await run("list", "--format", "json", "--state", "cancelled")).output)[0]["id"] == wid
    refused = await run("submit", "--queue", "ops-a", "--gpus", "64")
    assert refused.exit_code == 1 and "422" in refused.output
    assert (await run("queues")).exit_code == 0
    inv = await run("inventory")
    assert inv.exit_code == 0 and "of 8.0 GPUs allocated" in inv.output
    exported = await run("export-k8s")
    assert exported.exit_code == 0 and "kind: Queue" in exported.output
