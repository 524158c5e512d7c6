"""`garrison models add|list|remove`: the model pools behind the LLM gateway."""

from __future__ import annotations

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows
from garrison.client.llm import LLMAdmin

app = typer.Typer(name="models", help="Model pools served by the LLM gateway.", no_args_is_help=True)


@app.command("add")
def add(
    model: str = typer.Argument(..., help="The name clients ask for."),
    base_url: str = typer.Option(..., "--base-url", help="OpenAI base URL of the replica, e.g. http://h:8000/v1"),
    kind: str = typer.Option("openai", "--kind", help="openai, vllm, ollama or llamacpp"),
    max_concurrency: int = typer.Option(64, "--max-concurrency", help="Requests in flight on this replica."),
    upstream_model: str = typer.Option(None, "--upstream-model", help="Name the upstream knows the model by."),
    api_key: str = typer.Option(None, "--api-key", envvar="GARRISON_UPSTREAM_API_KEY",
                                help="Key garrison sends upstream (held by garrison)."),
    fallback: list[str] = typer.Option(None, "--fallback", help="Fallback model, repeatable, in order."),
    provider: str = typer.Option(None, "--provider", help="genai-prices provider id, for pricing."),
    context_window: int = typer.Option(None, "--context-window"),
    priority_scheduling: bool = typer.Option(False, "--priority-scheduling",
                                             help="The replica runs vLLM --scheduling-policy priority."),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    with client_from(url, key) as c:
        out = call(LLMAdmin(c).add_model, model, base_url, kind=kind, max_concurrency=max_concurrency,
                   upstream_model=upstream_model, api_key=api_key, fallbacks=fallback or None,
                   provider=provider, context_window=context_window, priority_scheduling=priority_scheduling)
    console.print(f"model [bold]{out['name']}[/bold] now has {len(out['replicas'])} replica(s)")


@app.command("list")
def list_(url: str = UrlOption, key: str = KeyOption,
          fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    with client_from(url, key) as c:
        models = call(LLMAdmin(c).list_models)
    rows = [
        {"model": m["name"], "replica": r["id"], "base_url": r["base_url"], "kind": r["kind"],
         "upstream_model": r["upstream_model"], "max_concurrency": r["max_concurrency"],
         "in_flight": r["in_flight"], "healthy": r["healthy"], "breaker": r["breaker"],
         "fallbacks": m["fallbacks"]}
        for m in models for r in (m["replicas"] or [{}])
    ]
    if fmt == "json":
        print_rows(models, [], "json")
        return
    print_rows(rows, ["model", "replica", "base_url", "kind", "upstream_model", "max_concurrency", "in_flight",
                      "healthy", "breaker", "fallbacks"], fmt)


@app.command("remove")
def remove(model: str, replica: str = typer.Option(None, "--replica", help="Remove only this replica."),
           url: str = UrlOption, key: str = KeyOption) -> None:
    with client_from(url, key) as c:
        call(LLMAdmin(c).remove_model, model, replica)
    console.print(f"removed {'replica ' + replica + ' of ' if replica else 'model '}{model}")
