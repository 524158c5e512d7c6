"""`garrison usage`: usage and cost reports from the metering ledger."""

from __future__ import annotations

import csv
import sys

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, print_rows
from garrison.client.llm import Metering

app = typer.Typer(name="usage", help="Usage and cost reports.", invoke_without_command=True)

RESOURCE_COLUMNS = ["resource", "unit", "quantity", "records"]
COLUMNS = ["requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
           "unpriced_requests"]


@app.callback()
def report(
    by: str = typer.Option(None, "--by", help="tenant, key, model, agent or day (default model); with "
                           "--resources: tenant, source, resource or day (default resource)"),
    resources: bool = typer.Option(False, "--resources", help="CPU-, memory GiB- and GPU-seconds "
                                   "instead of model calls"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    since: str = typer.Option(None, "--since", help="First day, YYYY-MM-DD"),
    until: str = typer.Option(None, "--until", help="Last day, YYYY-MM-DD"),
    tenant: str = typer.Option(None, "--tenant", help="Operator admin: a tenant id, or '*' for all"),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    if resources:
        by = by or "resource"
        if by not in ("tenant", "source", "resource", "day"):
            raise typer.BadParameter("with --resources, --by must be tenant, source, resource or day")
        columns = [by, *[c for c in RESOURCE_COLUMNS if c != by]]
    else:
        by = by or "model"
        if by not in ("tenant", "key", "model", "agent", "day"):
            raise typer.BadParameter("--by must be tenant, key, model, agent or day")
        columns = [by, *COLUMNS]
    with client_from(url, key) as c:
        fetch = Metering(c).resources if resources else Metering(c).usage
        out = call(fetch, by, since=since, until=until, tenant=tenant)
    rows = out["rows"]
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return
    print_rows(rows, columns, fmt, title=f"{'resource usage' if resources else 'usage'} by {by}")
