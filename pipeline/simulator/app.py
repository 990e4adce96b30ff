"""The HTTP server: its lifecycle, routes and in-process API (request log, stats, runtime changes).

A real socket server (not a mock transport) so LiteLLM's own provider code,
HTTP clients, timeouts and exception mapping are exercised end to end.

The provider endpoints (chat, embeddings, Azure OpenAI, Cohere rerank; ``"stream": true``
streams SSE or NDJSON) live in ``endpoints``, how replies and faults go on the wire in
``respond``, the request log in ``request_log`` and the ``/_sim/`` control API in ``control``.
Every call goes through the fault book and the request log (never credentials). Error
faults answer before any stream starts, so a caller can still fall back;
``stream_cut`` instead drops the connection half way through a 200 reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import TracebackType
from typing import Any

from aiohttp import web

from pipeline.simulator.control import ControlApi
from pipeline.simulator.endpoints import ProviderEndpoints
from pipeline.simulator.faults import RUNTIME_FIELDS, FaultBook, SimulatorConfig
from pipeline.simulator.request_log import RequestLog


class ProviderSimulator:
    """OpenAI/Anthropic/Ollama look-alike on a real port; ``async with`` starts and stops it."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.book = FaultBook(self.config.rules, seed=self.config.seed)
        self.request_log = RequestLog(self.config.request_log_size)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._endpoints = ProviderEndpoints(self)
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind (port 0 = any free port) and return the base URL."""
        self._closing = asyncio.Event()
        # handler_cancellation: a client that times out must not leave a hang behind.
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._url = f"http://{host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ProviderSimulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ in-process access

    @property
    def calls(self) -> int:
        """Provider calls numbered so far (the last request-log ``seq``)."""
        return self.request_log.last_seq

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.request_log.entries(since)

    def clear_requests(self) -> None:
        self.request_log.clear()

    def stats(self) -> dict[str, Any]:
        return self.request_log.stats()

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Apply runtime changes (validated); raises ``ValueError``/``ValidationError``."""
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(f"not changeable at runtime: {sorted(unknown)}")
        self.config = SimulatorConfig.model_validate({**self.config.model_dump(), **changes})
        return self.config

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._endpoints.register(app)
        ControlApi(self).register(app)
        return app

    async def pause(self, delay_ms: float, hang_s: float) -> None:
        """Latency, then a timeout fault's hang (cut short when the server stops)."""
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if hang_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=hang_s)


async def _serve_until_signal(host: str, port: int, config: SimulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = ProviderSimulator(config)
    url = await sim.start(host, port)
    try:
        print(f"simulator listening on {url}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def serve(host: str, port: int, config: SimulatorConfig) -> None:
    """Blocking CLI entry: print ``simulator listening on URL`` first, run until SIGINT/SIGTERM."""
    asyncio.run(_serve_until_signal(host, port, config))


run_forever = serve
