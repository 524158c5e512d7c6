"""`garrison state`: checkpoint storage stats, retention policy, prune now."""

from __future__ import annotations

import typer

from garrison.cli.common import KeyOption, UrlOption, call, client_from, console, print_rows
from garrison.client.state import State

app = typer.Typer(name="state", help="Agent state: checkpoint storage stats, retention and pruning.",
                  no_args_is_help=True)

KeepLast = typer.Option(None, "--keep-last", min=1, help="Keep the newest N checkpoints per thread.")
MaxAge = typer.Option(None, "--max-age", min=1, help="Drop checkpoints older than this many seconds.")
Idle = typer.Option(None, "--idle", min=1, help="Drop threads idle for this many seconds.")


def _state(url: str | None, key: str | None) -> State:
    return State(client_from(url, key))


@app.command()
def stats(fmt: str = typer.Option("table", "--format"), url: str = UrlOption, key: str = KeyOption) -> None:
    """Threads, checkpoints and bytes stored for your tenant."""
    s = call(_state(url, key).stats)
    print_rows([s], ["tenant_id", "threads", "checkpoints", "blobs", "writes", "bytes"], fmt, title="state")
    if fmt != "json" and s.get("vector_search"):
        # How memory search finds its candidates (sqlite-vec, pgvector, or numpy and why).
        console.print(f"memory vector search: {s['vector_search']}", highlight=False, markup=False)


@app.command()
def retention(keep_last: int = KeepLast, max_age: float = MaxAge, idle: float = Idle,
              clear: bool = typer.Option(False, "--clear", help="Remove the policy."),
              url: str = UrlOption, key: str = KeyOption) -> None:
    """Show the tenant's retention policy, or set it (applied in the background)."""
    state = _state(url, key)
    if clear or keep_last or max_age or idle:
        policy = call(state.set_retention, keep_last=keep_last, max_age_s=max_age, idle_thread_s=idle)
    else:
        policy = call(state.retention)
    console.print_json(data=policy)


@app.command()
def prune(keep_last: int = KeepLast, max_age: float = MaxAge, idle: float = Idle,
          url: str = UrlOption, key: str = KeyOption) -> None:
    """Apply a policy now (given here, else the stored one) and report what it freed."""
    with console.status("pruning checkpoints..."):
        report = call(_state(url, key).prune, keep_last=keep_last, max_age_s=max_age, idle_thread_s=idle)
    if report.get("skipped"):
        console.print(f"nothing pruned: {report['skipped']} (set one with `garrison state retention`)")
        return
    freed = report["bytes_before"] - report["bytes_after"]
    console.print(f"dropped {report['checkpoints_dropped']} checkpoints and {report['threads_dropped']} idle "
                  f"threads; {report['bytes_before']:,} -> {report['bytes_after']:,} bytes ({freed:,} freed)")
    if report.get("skipped_delta_threads"):
        console.print(f"skipped (DeltaChannel): {', '.join(report['skipped_delta_threads'])}")
