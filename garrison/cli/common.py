"""Shared CLI plumbing: options for talking to a running server, output helpers."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from garrison.client import Client
from garrison.client.errors import ApiError
from garrison.config import Settings

console = Console()
err_console = Console(stderr=True)

UrlOption = typer.Option(None, "--url", help="garrison server URL (default: the local server).",
                         envvar="GARRISON_URL")
KeyOption = typer.Option(None, "--key", help="API key (default: <data dir>/admin.key).", envvar="GARRISON_KEY")


def client_from(url: str | None, key: str | None) -> Client:
    settings = Settings()
    if key is None:
        path = settings.admin_key_path
        if not path.exists():
            err_console.print(f"[red]no --key given and {path} does not exist; start garrison with "
                              "`garrison up` first or pass --key[/red]")
            raise typer.Exit(2)
        key = path.read_text().strip()
    verify: Any = True
    if settings.tls_client_ca:
        verify = str(settings.tls_client_ca)
    return Client(url or settings.base_url, key, verify=verify)


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    """Run a client call; turn errors into a one-line message and exit code 1."""
    try:
        return fn(*args, **kw)
    except ApiError as exc:
        err_console.print(f"[red]error {exc.status}:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        err_console.print(f"[red]cannot reach garrison:[/red] {exc}")
        raise typer.Exit(1) from exc
    except Exception as exc:  # httpx transport errors
        if type(exc).__module__.startswith("httpx"):
            err_console.print(f"[red]cannot reach garrison:[/red] {exc}")
            raise typer.Exit(1) from exc
        raise


def print_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str = "table", title: str | None = None) -> None:
    if fmt == "json":
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
