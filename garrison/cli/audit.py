"""`garrison audit verify|tail`."""

from __future__ import annotations

import json

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from garrison.audit.verify import verify
from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, err_console, print_rows
from garrison.config import Settings

audit_app = typer.Typer(name="audit", help="Read and verify the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Recompute the hash chain from the store and check it against the signed checkpoints."""
    settings = Settings()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                  transient=True) as progress:
        task = progress.add_task("verifying audit log...", total=None)
        res = verify(settings.resolved_database_url, settings.data_dir / "audit",
                     progress=lambda n: progress.update(task, description=f"verified {n:,} entries..."))
    if as_json:
        print(json.dumps(res.__dict__))
    elif res.ok:
        console.print(f"[green]audit log intact[/green]: {res.entries:,} entries, "
                      f"{res.checkpoints} signed checkpoints")
    else:
        console.print(f"[red]audit log verification FAILED[/red] ({res.entries:,} entries read):")
        for p in res.problems:
            console.print(f"  - {p}")
    raise typer.Exit(0 if res.ok else 1)


@audit_app.command("tail")
def audit_tail(limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000), url: str = UrlOption,
               key: str = KeyOption, fmt: str = typer.Option("table", "--format")) -> None:
    with client_from(url, key) as c:
        rows = call(c.audit_tail, limit)
    print_rows(rows, ["seq", "ts", "principal_id", "action", "resource", "decision", "reason"], fmt)
