"""`garrison tenants ...` and `garrison keys ...`, backed by the admin API."""

from __future__ import annotations

import re

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows

tenants_app = typer.Typer(name="tenants", help="Manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(name="keys", help="Create, list, revoke and rotate API keys.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise typer.BadParameter("use a positive duration such as 3600, 90m, 12h, 30d or 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


@tenants_app.command("list")
def tenants_list(url: str = UrlOption, key: str = KeyOption,
                 fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    with client_from(url, key) as c:
        print_rows(call(c.list_tenants), ["id", "name", "created_at", "disabled"], fmt)


@tenants_app.command("create")
def tenants_create(name: str, url: str = UrlOption, key: str = KeyOption) -> None:
    with client_from(url, key) as c:
        row = call(c.create_tenant, name)
    console.print(f"created tenant [bold]{row['name']}[/bold] ({row['id']})")


@keys_app.command("create")
def keys_create(
    scope: list[str] = typer.Option(..., "--scope", "-s", help="resource:verb, repeatable (e.g. llm:invoke)."),
    tenant: str = typer.Option(None, "--tenant", help="Tenant id or name (default: the caller's)."),
    ttl: str = typer.Option(None, "--ttl", help="Lifetime, e.g. 30d, 12h (default: no expiry)."),
    name: str = typer.Option("api key", "--name"),
    principal: str = typer.Option("service", "--principal", help="Principal the key acts as."),
    kind: str = typer.Option("service", "--kind", help="user, service or agent."),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    ttl_s = parse_duration(ttl) if ttl else None
    with client_from(url, key) as c:
        row = call(c.create_key, scope, name=name, principal=principal, kind=kind, tenant=tenant, ttl_s=ttl_s)
    console.print(f"created key {row['id']} with scopes {', '.join(row['scopes'])}")
    console.print("the key is shown once; store it now:")
    print(row["key"])


@keys_app.command("list")
def keys_list(url: str = UrlOption, key: str = KeyOption,
              fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    with client_from(url, key) as c:
        rows = call(c.list_keys)
    print_rows(rows, ["id", "tenant_id", "name", "scopes", "expires_at", "revoked_at", "last_used_at"], fmt)


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    with client_from(url, key) as c:
        call(c.revoke_key, key_id)
    console.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    with client_from(url, key) as c:
        row = call(c.rotate_key, key_id)
    console.print(f"{key_id} is revoked; its replacement is {row['id']} (shown once):")
    print(row["key"])
