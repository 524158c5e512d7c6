"""`garrison traces`: search traces, show one as a tree, a session, usage, OTLP forwarding."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.tree import Tree

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows
from garrison.client.telemetry import Telemetry

app = typer.Typer(name="traces", help="Traces of agent runs: search, tree, sessions, usage, forwarding.",
                  no_args_is_help=True)


def _t(url: str | None, key: str | None) -> Telemetry:
    return Telemetry(client_from(url, key))


@app.command("list")
def list_traces(session: str = typer.Option(None, "--session"), agent: str = typer.Option(None),
                user: str = typer.Option(None), model: str = typer.Option(None),
                status: str = typer.Option(None, help="ok or error"), limit: int = typer.Option(50, min=1, max=200),
                fmt: str = typer.Option("table", "--format"), url: str = UrlOption, key: str = KeyOption) -> None:
    body = call(_t(url, key).traces, session_id=session, agent=agent, user=user, model=model, status=status,
                limit=limit)
    print_rows(body["traces"], ["trace_id", "start_time", "name", "span_count", "duration_ms", "status",
                                "cost_usd"], fmt, title="traces")


def _label(span: dict[str, Any]) -> str:
    bits = [f"[bold]{span['name']}[/bold]", f"[dim]{span['kind']}[/dim]", f"{span['duration_ms']} ms"]
    if span.get("usage"):
        bits.append(f"{span['usage']['input_tokens']}→{span['usage']['output_tokens']} tok")
    if span.get("cost_usd") is not None:
        bits.append(f"${span['cost_usd']:.6f}")
    if span["status"] == "error":
        bits.append(f"[red]{span.get('error_class') or 'error'}[/red]")
    return "  ".join(bits)


def _grow(tree: Tree, span: dict[str, Any]) -> None:
    node = tree.add(_label(span))
    for child in span.get("children", []):
        _grow(node, child)


@app.command()
def show(trace_id: str, fmt: str = typer.Option("tree", "--format", help="tree or json"),
         url: str = UrlOption, key: str = KeyOption) -> None:
    body = call(_t(url, key).trace, trace_id)
    if fmt == "json":
        console.print_json(json.dumps(body))
        return
    s = body["summary"]
    tree = Tree(f"trace {trace_id}  {body['duration_ms']} ms  ${s['cost_usd']:.6f}  "
                f"{s['input_tokens']}→{s['output_tokens']} tok")
    for root in body["spans"]:
        _grow(tree, root)
    console.print(tree)


@app.command()
def session(session_id: str, fmt: str = typer.Option("table", "--format"), url: str = UrlOption,
            key: str = KeyOption) -> None:
    body = call(_t(url, key).session, session_id)
    print_rows(body["traces"], ["trace_id", "start_time", "name", "span_count", "cost_usd"], fmt,
               title=f"session {session_id}: {body['trace_count']} traces, ${body['cost_usd']:.6f}")


@app.command()
def usage(since: str = typer.Option(None, help="RFC 3339; default 7 days ago"), until: str = typer.Option(None),
          fmt: str = typer.Option("table", "--format"), url: str = UrlOption, key: str = KeyOption) -> None:
    body = call(_t(url, key).usage, since, until)
    print_rows(body["cost_by_model_by_day"], ["date", "model", "provider", "calls", "input_tokens",
                                              "output_tokens", "cost_usd", "unpriced_calls"], fmt,
               title=f"cost by model by day (total ${body['cost_usd']:.6f})")


@app.command()
def forward(endpoint: str = typer.Argument(None, help="OTLP/HTTP traces URL; omit to show the current one"),
            header: list[str] = typer.Option([], "--header", help="Name=value, repeatable"),
            off: bool = typer.Option(False, "--off", help="Stop forwarding."),
            content: bool = typer.Option(False, "--content", help="Forward captured message content too."),
            url: str = UrlOption, key: str = KeyOption) -> None:
    t = _t(url, key)
    if off:
        call(t.delete_exporter)
        console.print("forwarding stopped")
        return
    if endpoint is None:
        console.print_json(json.dumps(call(t.exporter)))
        return
    headers = dict(h.split("=", 1) for h in header if "=" in h)
    console.print_json(json.dumps(call(t.set_exporter, endpoint, headers, True, content)))
