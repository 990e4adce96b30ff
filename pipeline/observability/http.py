"""The worker's HTTP port: /metrics for Prometheus, /healthz and /readyz for orchestrators."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class HealthServer:
    """`/healthz`: the process is up. `/readyz`: every readiness check passes (JSON details)."""

    def __init__(self, readiness: ReadinessCheck, host: str = "0.0.0.0", port: int = 9464) -> None:
        self._readiness = readiness
        self._host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port: report the real one
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("metrics and health on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        try:
            ready, details = await asyncio.wait_for(self._readiness(), timeout=5)
        except Exception as exc:  # a check that hangs or breaks means not ready
            ready, details = False, {"error": f"{type(exc).__name__}: {exc}"}
        return web.json_response({"ready": ready, **details}, status=200 if ready else 503)
