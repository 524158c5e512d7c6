"""`garrison registry`: list, publish, status, import/export snapshots, sync from another registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.progress import Progress

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, err_console, print_rows
from garrison.client.registry import Registry

app = typer.Typer(name="registry", help="The private MCP registry: list, publish, import, export, sync.",
                  no_args_is_help=True)
BATCH = 500


def _registry(url: str | None, key: str | None) -> Registry:
    return Registry(client_from(url, key))


def _official(item: dict[str, Any]) -> dict[str, Any]:
    return (item.get("_meta") or {}).get("io.modelcontextprotocol.registry/official") or {}


@app.command("list")
def list_servers(search: str = typer.Option(None, help="Substring of name or description."),
                 latest: bool = typer.Option(True, help="Only the latest version of each server."),
                 limit: int = typer.Option(100, min=1, max=100), fmt: str = typer.Option("table", "--format"),
                 url: str = UrlOption, key: str = KeyOption) -> None:
    body = call(_registry(url, key).list, search=search, limit=limit, version="latest" if latest else None)
    rows = [{"name": s["server"]["name"], "version": s["server"]["version"], "status": _official(s).get("status"),
             "latest": _official(s).get("isLatest"), "description": s["server"].get("description")}
            for s in body["servers"]]
    print_rows(rows, ["name", "version", "status", "latest", "description"], fmt, title="MCP servers")


@app.command()
def publish(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A server.json file."),
            force: bool = typer.Option(False, help="Accept breaking tool changes without a major bump."),
            url: str = UrlOption, key: str = KeyOption) -> None:
    doc = json.loads(file.read_text())
    out = call(_registry(url, key).publish, doc, force=force)
    console.print(f"published {out['server']['name']} {out['server']['version']}"
                  f" (latest: {_official(out).get('isLatest')})")


@app.command()
def status(name: str, new_status: str = typer.Argument(..., metavar="STATUS", help="active|deprecated|deleted"),
           version: str = typer.Option(None, help="One version (default: all versions)."),
           message: str = typer.Option(None), url: str = UrlOption, key: str = KeyOption) -> None:
    call(_registry(url, key).set_status, name, new_status, message, version)
    console.print(f"{name}{' ' + version if version else ''}: {new_status}")


def _load_snapshot(file: Path) -> list[Any]:
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from exc
    items = body.get("servers") if isinstance(body, dict) else body
    if not isinstance(items, list):
        err_console.print("[red]a snapshot is a JSON list of server.json entries or {\"servers\": [...]}[/red]")
        raise typer.Exit(2)
    return items


def _import(registry: Registry, items: list[Any]) -> dict[str, Any]:
    totals: dict[str, Any] = {"imported": 0, "skipped": 0, "failed": 0, "errors": []}
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("importing", total=len(items))
        for start in range(0, len(items), BATCH):
            out = call(registry.import_entries, items[start:start + BATCH])
            for k in ("imported", "skipped", "failed"):
                totals[k] += out[k]
            totals["errors"] += out.get("errors", [])
            progress.advance(task, len(items[start:start + BATCH]))
    return totals


def _report(totals: dict[str, Any]) -> None:
    console.print(f"imported {totals['imported']}, already present {totals['skipped']}, failed {totals['failed']}")
    for e in totals["errors"][:20]:
        err_console.print(f"  [yellow]{e}[/yellow]")


@app.command("import")
def import_snapshot(file: Path = typer.Argument(..., exists=True, dir_okay=False),
                    url: str = UrlOption, key: str = KeyOption) -> None:
    """Import a snapshot file (e.g. taken from the official registry); known versions are skipped."""
    totals = _import(_registry(url, key), _load_snapshot(file))
    _report(totals)
    if totals["failed"] and not totals["imported"] and not totals["skipped"]:
        raise typer.Exit(1)


@app.command("export")
def export_snapshot(file: Path = typer.Argument(..., dir_okay=False),
                    include_deleted: bool = typer.Option(True), url: str = UrlOption, key: str = KeyOption) -> None:
    """Write every entry (ServerResponse envelopes) to a snapshot file that `import` reads back."""
    servers = call(lambda: list(_registry(url, key).iter_all(include_deleted=include_deleted)))
    file.write_text(json.dumps({"servers": servers}, indent=1))
    console.print(f"exported {len(servers)} entries to {file}")


@app.command()
def sync(source: str = typer.Option(..., "--from", help="Base URL of another registry, e.g. "
                                                         "https://registry.modelcontextprotocol.io"),
         since: str = typer.Option(None, help="Only entries updated since this RFC 3339 time."),
         source_key: str = typer.Option(None, help="Bearer key for the source registry, if it needs one."),
         url: str = UrlOption, key: str = KeyOption) -> None:
    """Pull every entry of another registry (API v0.1) into this one."""
    headers = {"Authorization": f"Bearer {source_key}"} if source_key else {}
    items: list[Any] = []
    cursor: str | None = None
    try:
        with httpx.Client(base_url=source.rstrip("/"), headers=headers, timeout=30) as http:
            while True:
                params: dict[str, Any] = {"limit": 100}
                if cursor:
                    params["cursor"] = cursor
                if since:
                    params["updated_since"] = since
                resp = http.get("/v0.1/servers", params=params)
                resp.raise_for_status()
                body = resp.json()
                items += body.get("servers", [])
                cursor = (body.get("metadata") or {}).get("nextCursor")
                if not cursor:
                    break
    except (httpx.HTTPError, ValueError) as exc:
        err_console.print(f"[red]cannot read {source}:[/red] {exc} (offline? use `garrison registry import`)")
        raise typer.Exit(1) from exc
    console.print(f"fetched {len(items)} entries from {source}")
    _report(_import(_registry(url, key), items))


@app.command()
def health(name: str = typer.Argument(None, help="One server (default: check all now)."),
           url: str = UrlOption, key: str = KeyOption) -> None:
    results = call(_registry(url, key).check_health, name)["results"]
    rows = [{"entry": k, **{f: v.get(f) for f in ("status", "latencyMs", "toolCount", "error")}}
            for k, v in sorted(results.items())]
    print_rows(rows, ["entry", "status", "latencyMs", "toolCount", "error"], title="health")
