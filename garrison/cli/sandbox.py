"""`garrison sandbox ...`: backends, create, list, exec, run, kill, k8s manifests, templates."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
import yaml

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows

app = typer.Typer(name="sandbox", help="Sandboxed code execution: create sandboxes, run code and commands.",
                  no_args_is_help=True)
FormatOption = typer.Option("table", "--format", help="table or json")


def _http(url: str | None, key: str | None) -> Any:
    return client_from(url, key)


@app.command("backends")
def backends(url: str = UrlOption, key: str = KeyOption, fmt: str = FormatOption) -> None:
    """Which backends are usable here (after their self-test), and the warm pools."""
    out = call(_http(url, key).request, "GET", "/api/sandboxes/backends")
    print_rows(out["items"], ["name", "isolation", "available", "default", "reason"], fmt, title="sandbox backends")


@app.command("list")
def list_(all_: bool = typer.Option(False, "--all", help="Include ended sandboxes."), url: str = UrlOption,
          key: str = KeyOption, fmt: str = FormatOption) -> None:
    out = call(_http(url, key).request, "GET", "/api/sandboxes", params={"include_ended": all_})
    print_rows(out["items"], ["id", "backend", "isolation", "state", "killed_reason", "expires_at"], fmt)


@app.command("create")
def create(template: str = typer.Option("python", "--template"), backend: str = typer.Option(None, "--backend"),
           timeout: int = typer.Option(None, "--timeout", help="Lifetime in seconds."),
           memory_mib: int = typer.Option(None, "--memory-mib"), cpus: float = typer.Option(None, "--cpus"),
           url: str = UrlOption, key: str = KeyOption) -> None:
    body = {"template": template, "backend": backend, "timeout_s": timeout,
            "limits": {k: v for k, v in {"memory_mib": memory_mib, "cpus": cpus}.items() if v is not None}}
    out = call(_http(url, key).request, "POST", "/api/sandboxes", json=body)
    console.print(f"[bold]{out['id']}[/bold] {out['backend']} ({out['isolation']}), expires {out['expires_at']}")


@app.command("exec")
def exec_(sandbox_id: str, code: str = typer.Argument(None, help="Python code; '-' or none reads stdin."),
          timeout: float = typer.Option(None, "--timeout"), url: str = UrlOption, key: str = KeyOption) -> None:
    """Run Python in the sandbox's default context."""
    source = sys.stdin.read() if code in (None, "-") else code
    out = call(_http(url, key).request, "POST", f"/api/sandboxes/{sandbox_id}/run_code",
               json={"code": source, "timeout_s": timeout})
    sys.stdout.write(out["stdout"])
    sys.stderr.write(out["stderr"])
    if out.get("text") is not None:
        console.print(out["text"])
    if out.get("error"):
        sys.stderr.write(out["error"]["traceback"] or f"{out['error']['name']}: {out['error']['value']}\n")
        raise typer.Exit(1)


@app.command("run")
def run(sandbox_id: str, cmd: str, timeout: float = typer.Option(None, "--timeout"), url: str = UrlOption,
        key: str = KeyOption) -> None:
    """Run a shell command in the sandbox; exits with its exit code."""
    out = call(_http(url, key).request, "POST", f"/api/sandboxes/{sandbox_id}/commands",
               json={"cmd": cmd, "timeout_s": timeout})
    sys.stdout.write(out["stdout"])
    sys.stderr.write(out["stderr"])
    raise typer.Exit(out["exit_code"] or 0)


@app.command("kill")
def kill(sandbox_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    out = call(_http(url, key).request, "DELETE", f"/api/sandboxes/{sandbox_id}")
    console.print(f"{out['id']}: {out['state']} ({out['killed_reason']})")


@app.command("k8s-manifests")
def k8s_manifests(image: str = typer.Option(..., "--image", help="Container image with python3 and the agent."),
                  namespace: str = typer.Option("garrison-sandboxes", "--namespace"),
                  template: str = typer.Option("python", "--template"),
                  runtime_class: str = typer.Option("gvisor", "--runtime-class", help="gvisor or kata"),
                  replicas: int = typer.Option(2, "--replicas"), memory_mib: int = typer.Option(512, "--memory-mib"),
                  cpus: float = typer.Option(1.0, "--cpus")) -> None:
    """Print agent-sandbox SandboxTemplate and SandboxWarmPool manifests (YAML) for kubectl apply."""
    from garrison.sandbox.backends import kubernetes as k8s

    handler = "runsc" if runtime_class == "gvisor" else "kata"
    docs = [k8s.runtime_class(runtime_class, handler),
            k8s.sandbox_template(template, namespace, image=image, runtime_class=runtime_class,
                                 memory_mib=memory_mib, cpus=cpus),
            k8s.sandbox_warm_pool(f"{template}-pool", namespace, template, replicas)]
    sys.stdout.write(yaml.safe_dump_all(json.loads(json.dumps(docs)), sort_keys=False))


templates_app = typer.Typer(name="templates", help="Sandbox templates: Python packages from the local wheelhouse.",
                            no_args_is_help=True)
app.add_typer(templates_app)


@templates_app.command("list")
def templates_list(url: str = UrlOption, key: str = KeyOption, fmt: str = FormatOption) -> None:
    """Templates sandboxes can start from."""
    out = call(_http(url, key).request, "GET", "/api/sandbox-templates")
    rows = [{**t, "packages": " ".join(t["packages"]) or "-"} for t in out["items"]]
    print_rows(rows, ["name", "packages", "builtin", "fingerprint", "created_at"], fmt, title="sandbox templates")


@templates_app.command("add")
def templates_add(name: str, packages: list[str] = typer.Argument(None, help="Requirements, e.g. numpy==2.1.0"),
                  env: list[str] = typer.Option(None, "--env", help="KEY=VALUE, repeatable."),
                  url: str = UrlOption, key: str = KeyOption) -> None:
    """Add a template; the server installs its packages from its wheelhouse (no network)."""
    pairs = {}
    for item in env or []:
        k, sep, v = item.partition("=")
        if not sep:
            console.print(f"[red]--env {item!r}: expected KEY=VALUE[/red]")
            raise typer.Exit(2)
        pairs[k] = v
    out = call(_http(url, key).request, "POST", "/api/sandbox-templates",
               json={"name": name, "packages": list(packages or []), "env": pairs})
    installed = ", ".join(f"{k} {v}" for k, v in sorted(out["installed"].items())) or "no packages"
    console.print(f"[bold]{out['name']}[/bold]: {installed}")


@templates_app.command("remove")
def templates_remove(name: str, url: str = UrlOption, key: str = KeyOption) -> None:
    """Remove a template that no running sandbox or warm pool uses."""
    call(_http(url, key).request, "DELETE", f"/api/sandbox-templates/{name}")
    console.print(f"removed {name}")


@templates_app.command("k8s-apply")
def templates_k8s_apply(name: str, image: str = typer.Option(..., "--image", help=(
                            "Container image with python3, the agent and the template's packages.")),
                        replicas: int = typer.Option(2, "--replicas", help="Warm sandboxes kept ready."),
                        runtime_class: str = typer.Option(None, "--runtime-class", help="gvisor or kata; unset: "
                                                          "the server's GARRISON_SANDBOX_KUBERNETES_RUNTIME_CLASS."),
                        install_runtime_class: bool = typer.Option(False, "--install-runtime-class", help=(
                            "Also apply the cluster-scoped RuntimeClass.")),
                        url: str = UrlOption, key: str = KeyOption) -> None:
    """Apply a template to the server's Kubernetes cluster as an agent-sandbox SandboxTemplate
    and SandboxWarmPool (server-side apply; operator admin; audited)."""
    body: dict[str, Any] = {"image": image, "replicas": replicas, "install_runtime_class": install_runtime_class}
    if runtime_class:
        body["runtime_class"] = runtime_class
    out = call(_http(url, key).request, "POST", f"/api/sandbox-templates/{name}/kubernetes", json=body)
    for obj in out["objects"]:
        where = f"{obj['namespace']}/" if obj.get("namespace") else ""
        console.print(f"applied {obj['kind']} {where}{obj['name']} (uid {obj['uid']})")
    console.print(f"on {out['server']}")
