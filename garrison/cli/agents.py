"""`garrison agents`: deploy agent directories as immutable versions, move endpoints, inspect runs."""

from __future__ import annotations

from pathlib import Path

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, err_console, print_rows
from garrison.client.runtime import Agents

app = typer.Typer(name="agents", help="Agents: deploy, versions, endpoints (roll-out and roll-back), runs.",
                  no_args_is_help=True)


def _agents(url: str | None, key: str | None) -> Agents:
    return Agents(client_from(url, key))


def _show(agent: dict) -> None:
    rows = [{"version": v["version"], "kind": v["kind"], "graphs": v["graphs"], "digest": v["digest"][:12],
             "endpoints": [e for e, n in agent["endpoints"].items() if n == v["version"]],
             "created_at": v["created_at"]} for v in agent["versions"]]
    print_rows(rows, ["version", "kind", "graphs", "digest", "endpoints", "created_at"], title=agent["name"])


@app.command()
def deploy(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="The agent's directory."),
           name: str = typer.Option(None, "--name", help="Agent name (default: the directory's name)."),
           promote: bool = typer.Option(True, "--promote/--no-promote",
                                        help="Point the 'default' endpoint at the new version."),
           url: str = UrlOption, key: str = KeyOption) -> None:
    """Upload DIRECTORY (agent.toml or langgraph.json) as the agent's next immutable version."""
    agent_name = name or directory.resolve().name.lower().replace("_", "-")
    with console.status(f"deploying {agent_name}..."):
        agent = call(_agents(url, key).deploy, agent_name, directory, promote=promote)
    newest = agent["versions"][-1]
    console.print(f"deployed {agent_name} version {newest['version']} ({newest['digest'][:12]}); "
                  f"endpoints: {agent['endpoints']}")


@app.command("list")
def list_agents(fmt: str = typer.Option("table", "--format"), url: str = UrlOption, key: str = KeyOption) -> None:
    """The tenant's agents, their newest version and endpoints."""
    agents = call(_agents(url, key).list)
    rows = [{"name": a["name"], "versions": len(a["versions"]), "endpoints": [f"{e}=v{n}" for e, n in
                                                                           a["endpoints"].items()]} for a in agents]
    print_rows(rows, ["name", "versions", "endpoints"], fmt, title="agents")


@app.command()
def show(name: str, fmt: str = typer.Option("table", "--format"), url: str = UrlOption, key: str = KeyOption) -> None:
    """An agent's versions and which endpoint serves which."""
    agent = call(_agents(url, key).get, name)
    if fmt == "json":
        console.print_json(data=agent)
    else:
        _show(agent)


@app.command()
def endpoint(name: str, version: int = typer.Argument(..., min=1),
             endpoint_name: str = typer.Option("default", "--endpoint", help="Endpoint to move."),
             url: str = UrlOption, key: str = KeyOption) -> None:
    """Point an endpoint at VERSION: roll-out and roll-back are this one command."""
    agent = call(_agents(url, key).set_endpoint, name, endpoint_name, version)
    console.print(f"{name}: endpoint {endpoint_name} -> version {agent['endpoints'][endpoint_name]}")


@app.command()
def run(run_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    """A run's status, steps completed and error."""
    console.print_json(data=call(_agents(url, key).run, run_id))


@app.command()
def status(url: str = UrlOption, key: str = KeyOption) -> None:
    """Where durable runs execute (embedded Temporal dev server or a cluster) and whether it is up."""
    info = call(_agents(url, key).status)
    if info["temporal"].get("failure"):
        err_console.print(f"[red]Temporal failed:[/red] {info['temporal']['failure']}")
    console.print_json(data=info)
