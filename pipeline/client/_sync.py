"""SyncPipelineClient: the same calls, blocking, for scripts and notebooks.

The async client runs on a private event loop in a background thread, so this works where an
event loop is already running in the main thread (Jupyter) as well as where none is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from pipeline.client._async import PipelineClient, ProcessResult, StreamRestart
from pipeline.contracts.models import CompletionChunk, CompletionReply, CompletionRequest
from pipeline.settings import Settings

T = TypeVar("T")


class SyncPipelineClient:
    """`with SyncPipelineClient(settings) as client: print(client.process_text("hi", "summarize").content)`."""

    def __init__(self, settings: Settings | None = None, **client_options: Any) -> None:
        self._settings = settings
        self._options = client_options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pipeline-client", daemon=True)
        self._client: PipelineClient | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def client(self) -> PipelineClient:
        if self._client is None:
            raise RuntimeError("the client is not started: use `with SyncPipelineClient(...) as client:`")
        return self._client

    def start(self) -> None:
        self._thread.start()

        async def make() -> PipelineClient:  # aiokafka objects belong to the loop they are made on
            client = PipelineClient(self._settings, **self._options)
            await client.start()
            return client

        self._client = self._run(make())

    def stop(self) -> None:
        if self._client is not None:
            self._run(self._client.stop())
            self._client = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SyncPipelineClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def complete(self, request: CompletionRequest | None = None, *, timeout: float = 60.0,
                 **fields: Any) -> CompletionReply:
        return self._run(self.client.complete(request, timeout=timeout, **fields))

    def submit(self, request: CompletionRequest | None = None, **fields: Any) -> str:
        return self._run(self.client.submit(request, **fields))

    def wait_reply(self, request_id: str, *, timeout: float = 60.0) -> CompletionReply:
        return self._run(self.client.wait_reply(request_id, timeout=timeout))

    def process_text(self, text: str, task_type: str = "default", **options: Any) -> ProcessResult:
        return self._run(self.client.process_text(text, task_type, **options))

    def process_with_template(self, name: str, variables: dict[str, Any] | None = None,
                              **options: Any) -> ProcessResult:
        return self._run(self.client.process_with_template(name, variables, **options))

    def stream(self, request: CompletionRequest | None = None, *, timeout: float = 60.0,
               **fields: Any) -> Iterator[CompletionChunk | StreamRestart | CompletionReply]:
        events = self.client.stream(request, timeout=timeout, **fields)
        try:
            while True:
                try:
                    yield self._run(events.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(events.aclose())
