"""Composition root: creates the store, identity, policy and audit once, then each layer.

A layer joins by providing ``garrison/<layer>/layer.py`` (see docs/layers.md); layers
start in the order of ``LAYERS`` and stop in reverse.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from types import ModuleType
from typing import Any

from fastapi import Request

from garrison.audit.service import AuditLog
from garrison.config import Settings, check_config_file
from garrison.db import Database
from garrison.identity.service import IdentityService
from garrison.policy import PolicyEngine

log = logging.getLogger("garrison.platform")

LAYERS = ("registry", "tools", "metering", "llm", "telemetry", "sandbox", "state", "gpus", "runtime", "console")


def layer_modules() -> list[ModuleType]:
    """The layers present in this installation, in start order."""
    found = []
    for name in LAYERS:
        try:
            found.append(importlib.import_module(f"garrison.{name}.layer"))
        except ModuleNotFoundError as exc:
            if exc.name not in (f"garrison.{name}", f"garrison.{name}.layer"):
                raise
    return found


def _import_quietly(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # whoever needs it imports it again and reports the error there
            log.warning("could not preload %s", name, exc_info=True)


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.services: dict[str, Any] = {}
        self.bootstrap_key: str | None = None
        self._started: list[tuple[ModuleType, Any]] = []
        # Modules to import on a worker thread while the layers start: the loop mostly waits
        # then (the migration thread, the sandbox self-test), so work that follows start-up
        # (the runtime's Temporal worker, when `garrison up` expects to recover runs) finds
        # them imported.
        self.preload: list[str] = []
        self.startup_s: dict[str, float] = {}  # seconds each start-up phase took (shown by /readyz)
        self._preloading: asyncio.Future[None] | None = None
        data = settings.data_dir
        self.audit = AuditLog(self.db, data / "audit", flush_ms=settings.audit_flush_ms,
                              checkpoint_every=settings.audit_checkpoint_every,
                              checkpoint_seconds=settings.audit_checkpoint_seconds)
        self.identity = IdentityService(self.db, data, token_max_ttl_s=settings.token_max_ttl_s)
        self.policy = PolicyEngine(data / "policies", mode=settings.policy_mode)
        self.policy.audit = self.audit

    async def start(self, *, migrate: bool = True) -> None:
        began = time.monotonic()
        took: dict[str, float] = {}
        # garrison.toml: a layer table's unknown key or bad value stops the start here, naming the
        # file, table and key (a layer that reads its settings late would otherwise fail later).
        check_config_file()
        if self.preload:
            self._preloading = asyncio.ensure_future(asyncio.to_thread(_import_quietly, list(self.preload)))
        self.settings.ensure_data_dir()
        if migrate:
            from garrison.db.migrate import upgrade

            await asyncio.to_thread(upgrade, self.settings.resolved_database_url,
                                    self.settings.data_dir / "schema-stamp.json")
            took["migrate"] = time.monotonic() - began
        mark = time.monotonic()
        await self.audit.start()
        await self.identity.start()
        self.bootstrap_key = await self.identity.bootstrap(self.settings.admin_key_path)
        self.policy.operator_tenant_id = self.identity.default_tenant_id
        self.policy.load()
        if self.bootstrap_key:
            await self.audit.record_now(None, "tenants:create", "tenant/default", "allow", "first start",
                                        tenant_id=self.identity.default_tenant_id)
        took["foundation"] = time.monotonic() - mark
        for mod in layer_modules():
            mark = time.monotonic()
            service = await mod.start(self)
            self.services[mod.NAME] = service
            self._started.append((mod, service))
            took[mod.NAME] = time.monotonic() - mark
        took["total"] = time.monotonic() - began
        self.startup_s = {k: round(v, 3) for k, v in took.items()}
        # One line that says where start-up time goes (`garrison up` with GARRISON_LOG_LEVEL=INFO).
        log.info("platform started in %.2f s (%s)", took["total"],
                 ", ".join(f"{k} {v:.2f}" for k, v in took.items() if v >= 0.01 and k != "total"))

    async def stop(self) -> None:
        for mod, service in reversed(self._started):
            stop = getattr(mod, "stop", None)
            if stop is not None:
                try:
                    await stop(service)
                except Exception:
                    log.exception("layer %s failed to stop cleanly", mod.NAME)
        self._started.clear()
        await self.identity.stop()
        await self.audit.stop()
        await self.db.dispose()


def get_platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]
