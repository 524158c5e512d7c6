"""`garrison budgets list|create|delete`: spend caps enforced by the LLM gateway."""

from __future__ import annotations

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows
from garrison.client.llm import Metering

app = typer.Typer(name="budgets", help="Budgets per tenant, key, user, session or agent.", no_args_is_help=True)


@app.command("list")
def list_(url: str = UrlOption, key: str = KeyOption,
          fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    with client_from(url, key) as c:
        rows = call(Metering(c).budgets)
    print_rows(rows, ["id", "tenant_id", "scope", "scope_id", "window", "limit_usd", "spent_usd", "reserved_usd",
                      "remaining_usd"], fmt)


@app.command("create")
def create(
    scope: str = typer.Argument(..., help="tenant, key, user, session or agent"),
    limit_usd: str = typer.Option(..., "--limit-usd"),
    scope_id: str = typer.Option(None, "--id", help="Key id, user, session or agent (default: your tenant)"),
    window: str = typer.Option("month", "--window", help="day, week, month or total"),
    tenant_id: str = typer.Option(None, "--tenant", help="Operator admin: another tenant's id"),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    with client_from(url, key) as c:
        b = call(Metering(c).create_budget, scope, limit_usd, scope_id=scope_id, window=window,
                 tenant_id=tenant_id)
    console.print(f"budget {b['id']}: {b['scope']} {b['scope_id']} ${b['limit_usd']} per {b['window']}")


@app.command("delete")
def delete(budget_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    with client_from(url, key) as c:
        call(Metering(c).delete_budget, budget_id)
    console.print(f"deleted budget {budget_id}")
