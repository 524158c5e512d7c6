"""`garrison usage`: usage and cost reports from the metering ledger."""

from __future__ import annotations

import csv
import sys

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, print_rows
from garrison.client.llm import Metering

app = typer.Typer(name="usage", help="Usage and cost reports.", invoke_without_command=True)

COLUMNS = ["requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
           "unpriced_requests"]


@app.callback()
def report(
    by: str = typer.Option("model", "--by", help="tenant, key, model, agent or day"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    since: str = typer.Option(None, "--since", help="First day, YYYY-MM-DD"),
    until: str = typer.Option(None, "--until", help="Last day, YYYY-MM-DD"),
    tenant: str = typer.Option(None, "--tenant", help="Operator admin: a tenant id, or '*' for all"),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    if by not in ("tenant", "key", "model", "agent", "day"):
        raise typer.BadParameter("--by must be tenant, key, model, agent or day")
    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    with client_from(url, key) as c:
        out = call(Metering(c).usage, by, since=since, until=until, tenant=tenant)
    rows = out["rows"]
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[by, *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        return
    print_rows(rows, [by, *COLUMNS], fmt, title=f"usage by {by}")
