"""`garrison gpus ...`: submit, list, cancel, explain, export-k8s and simulate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, err_console, print_rows

app = typer.Typer(name="gpus", help="GPU scheduling: workloads, queues, inventory, KAI export, simulator.",
                  no_args_is_help=True)
FormatOption = typer.Option("table", "--format", help="table or json")


def _gpus(url: str | None, key: str | None) -> Any:
    from garrison.client.gpus import Gpus

    return Gpus(client_from(url, key))


def _json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@app.command("submit")
def submit(
    queue: str = typer.Option(..., "--queue", "-q", help="Leaf queue of your tenant."),
    gpus: int = typer.Option(None, "--gpus", help="Whole GPUs per member."),
    fraction: float = typer.Option(None, "--fraction", help="Share of one GPU per member (0 < f < 1)."),
    memory_mib: int = typer.Option(None, "--memory-mib", help="GPU memory per member instead of a fraction."),
    gang: int = typer.Option(1, "--gang", help="Members placed all together or not at all."),
    priority_class: str = typer.Option("batch", "--class", help="interactive, batch or training."),
    preemptible: bool = typer.Option(None, "--preemptible/--no-preemptible"),
    min_runtime: float = typer.Option(0.0, "--min-runtime", help="Seconds before it may be preempted."),
    topology: str = typer.Option("any", "--topology", help="any, node or nvlink."),
    required: bool = typer.Option(False, "--topology-required", help="Refuse to spread beyond the topology."),
    name: str = typer.Option("", "--name"),
    command: list[str] = typer.Argument(None, help="Command for the local launcher (after --)."),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    g = _gpus(url, key)
    row = call(g.submit, queue, gpus=gpus, fraction=fraction, memory_mib=memory_mib, gang_size=gang,
               priority_class=priority_class, preemptible=preemptible, min_runtime_s=min_runtime,
               topology=topology, topology_required=required, name=name, command=command or None)
    console.print(f"submitted [bold]{row['id']}[/bold] to {row['queue']}: {row['state']} ({row['reason']})")


@app.command("list")
def list_(state: str = typer.Option(None, "--state"), queue: str = typer.Option(None, "--queue"),
          limit: int = typer.Option(50, "--limit"), fmt: str = FormatOption,
          url: str = UrlOption, key: str = KeyOption) -> None:
    page = call(_gpus(url, key).list_workloads, state=state, queue=queue, limit=limit)
    rows = [{**w, "gpus_held": [p["gpu"] for p in w["placement"]]} for w in page["items"]]
    print_rows(rows, ["id", "queue", "priority_class", "state", "allocated_gpus", "gpus_held", "reason"], fmt)


@app.command("cancel")
def cancel(workload_id: str, url: str = UrlOption, key: str = KeyOption) -> None:
    row = call(_gpus(url, key).cancel, workload_id)
    console.print(f"{row['id']}: {row['state']}")


@app.command("explain")
def explain(workload_id: str, fmt: str = FormatOption, url: str = UrlOption, key: str = KeyOption) -> None:
    """Why a workload is pending, running or was preempted."""
    data = call(_gpus(url, key).explain, workload_id)
    if fmt == "json":
        _json(data)
        return
    console.print(f"[bold]{data['id']}[/bold] {data['state']} in queue {data['queue']} "
                  f"({data['priority_class']}, {'preemptible' if data['preemptible'] else 'non-preemptible'})")
    console.print(f"  why: {data['reason']}")
    if data.get("position_in_queue"):
        console.print(f"  position in its queue: {data['position_in_queue']}")
    q = data.get("queue_status")
    if q:
        console.print(f"  queue {q['name']}: holds {q['allocated']} GPUs, quota {q['effective_quota']}, "
                      f"fair share {q['fair_share']}, limit {q['limit']}")
    for h in data.get("history", []):
        console.print(f"  - {h['action']}: {h['reason']}")


@app.command("queues")
def queues(fmt: str = FormatOption, url: str = UrlOption, key: str = KeyOption) -> None:
    data = call(_gpus(url, key).queues)
    print_rows(data["queues"], ["name", "parent", "quota", "effective_quota", "fair_share", "allocated", "limit",
                                "over_quota_weight", "priority"], fmt)
    for w in data.get("warnings", []):
        err_console.print(f"[yellow]warning:[/yellow] {w}")


@app.command("set-queues")
def set_queues(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON or YAML list of queues."),
               url: str = UrlOption, key: str = KeyOption) -> None:
    doc = yaml.safe_load(file.read_text())
    data = call(_gpus(url, key).set_queues, doc["queues"] if isinstance(doc, dict) else doc)
    console.print(f"{len(data['queues'])} queues configured")
    for w in data.get("warnings", []):
        err_console.print(f"[yellow]warning:[/yellow] {w}")


@app.command("inventory")
def inventory(fmt: str = FormatOption, url: str = UrlOption, key: str = KeyOption) -> None:
    data = call(_gpus(url, key).inventory)
    console.print(f"source {data['source']}: {data['allocated']} of {data['capacity']} GPUs allocated")
    print_rows(data["gpus"], ["id", "model", "memory_mib", "free_mib", "nvlink_group", "healthy", "workloads"], fmt)


@app.command("set-inventory")
def set_inventory(file: Path = typer.Argument(None, exists=True, dir_okay=False, help="JSON or YAML nodes."),
                  discover: bool = typer.Option(False, "--discover", help="Use this host's GPUs (NVML)."),
                  url: str = UrlOption, key: str = KeyOption) -> None:
    if bool(file) == discover:
        raise typer.BadParameter("give a nodes file or --discover")
    nodes = None
    if file:
        doc = yaml.safe_load(file.read_text())
        nodes = doc["nodes"] if isinstance(doc, dict) else doc
    data = call(_gpus(url, key).set_inventory, nodes, discover)
    console.print(f"inventory from {data['source']}: {data['capacity']} healthy GPUs")


@app.command("export-k8s")
def export_k8s(
    namespace: str = typer.Option("default", "--namespace", "-n"),
    topology: str = typer.Option("default", "--topology", help="Name of the KAI Topology resource."),
    image: str = typer.Option("busybox", "--image", help="Container image of the exported pods."),
    trace: Path = typer.Option(None, "--trace", exists=True, dir_okay=False,
                               help="Export a trace file's queues and jobs instead of the server's."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the YAML here instead of stdout."),
    url: str = UrlOption, key: str = KeyOption,
) -> None:
    """KAI Scheduler Queue, PodGroup and Pod manifests (kubectl apply -f)."""
    if trace is not None:
        from garrison.gpus.kai import export
        from garrison.gpus.trace import TraceError, load

        try:
            loaded = load(trace)
        except TraceError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        docs = export(loaded.queues, [j.workload() for j in loaded.jobs], namespace, topology, image)
    else:
        docs = call(_gpus(url, key).export_k8s, namespace, topology, image)["items"]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    if output:
        output.write_text(text)
        console.print(f"wrote {len(docs)} resources to {output}")
    else:
        print(text, end="")


@app.command("simulate")
def simulate(
    trace: Path = typer.Option(None, "--trace", exists=True, dir_okay=False, help="A JSON trace file."),
    generate: int = typer.Option(None, "--generate", help="Generate a mixed trace from this seed."),
    gpus: int = typer.Option(None, "--gpus", help="GPUs to simulate (8 per node); default: the trace's or 8."),
    hours: float = typer.Option(8.0, "--hours", help="Length of a generated trace."),
    load: float = typer.Option(1.6, "--load", help="Offered load of a generated trace (1 = the cluster)."),
    save: Path = typer.Option(None, "--save", help="Also write the generated trace here."),
    as_json: bool = typer.Option(False, "--json", help="The full report as JSON."),
) -> None:
    """Replay a trace in virtual time against the scheduler and a FIFO whole-GPU baseline."""
    from garrison.gpus.simulator import simulate as run
    from garrison.gpus.trace import TraceError
    from garrison.gpus.trace import generate as make
    from garrison.gpus.trace import load as read

    if (trace is None) == (generate is None):
        raise typer.BadParameter("give --trace FILE or --generate SEED")
    if not 0 < hours <= 24 * 7 or not 0 < load <= 10:
        raise typer.BadParameter("--hours must be in (0, 168] and --load in (0, 10]")
    try:
        t = read(trace, gpus) if trace is not None else make(generate, gpus=8 if gpus is None else gpus, hours=hours, load=load)
    except TraceError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if save:
        save.write_text(json.dumps(t.to_json()))
    report = run(t)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    g, f = report["garrison"], report["fifo"]
    console.print(f"{report['jobs']} jobs on {report['gpus']} GPUs over {report['horizon_s'] / 3600:.1f} h")
    rows = [{"": "utilisation", "garrison": g["utilisation"], "fifo": f["utilisation"]},
            {"": "makespan (s)", "garrison": g["makespan_s"], "fifo": f["makespan_s"]}]
    for cls in ("interactive", "batch", "training"):
        rows.append({"": f"{cls} p95 wait (s)", "garrison": g["waits"][cls]["p95_s"], "fifo": f["waits"][cls]["p95_s"]})
    rows += [{"": "preemptions", "garrison": g["preemptions"], "fifo": 0},
             {"": "partial gangs", "garrison": g["partial_gangs"], "fifo": f["partial_gangs"]}]
    print_rows(rows, ["", "garrison", "fifo"])
    print_rows([{"queue": q, **v} for q, v in g["queues"].items()],
               ["queue", "share", "entitlement", "deviation_points"], title="shares while every queue is backlogged")
