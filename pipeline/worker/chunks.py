"""Streamed answers on the reply topic: chunk events, in order, before the final reply.

Deltas are handed over without waiting for the broker: while one chunk is being published the
next deltas gather, and go out together as the following chunk. So a fast provider never waits
on Kafka, a slow one gets a chunk per delta, and the chunks of a request stay in order (one
publisher task, one partition: the reply's key).

An attempt that fails after some chunks went out is followed by a new stream: `restart()`
publishes what is buffered, then starts a new `stream_id` whose first chunk names the one it
`replaces`, so a consumer discards the partial answer it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from pipeline.contracts.models import CORRELATION_HEADER, CompletionChunk
from pipeline.observability import tracing
from pipeline.transport.records import Publisher


class ChunkPublisher:
    """`await sink(model, delta)` buffers; `await close()` publishes the rest and reports errors."""

    def __init__(self, publisher: Publisher, topic: str, key: bytes, request_id: str) -> None:
        self._publisher = publisher
        self._topic = topic
        self._key = key
        self.request_id = request_id
        self.stream_id = uuid.uuid4().hex
        self.published = 0  # chunk events of the current stream acknowledged by the broker
        self.restarts = 0  # streams abandoned (failed attempts that had sent chunks)
        self._replaces: str | None = None
        self._pending: list[str] = []
        self._model = ""
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, model: str, delta: str) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # a failed publish surfaces here, to the provider loop
        self._model = model
        self._pending.append(delta)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"chunks-{self.request_id}")
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                text, self._pending = "".join(self._pending), []
                chunk = CompletionChunk(request_id=self.request_id, stream_id=self.stream_id, seq=self.published,
                                        delta=text, model=self._model,
                                        replaces=self._replaces if self.published == 0 else None)
                await self._publisher.publish(self._topic, chunk.model_dump_json().encode(), key=self._key,
                                              headers=tracing.inject({CORRELATION_HEADER: self.request_id}))
                self.published += 1
            if self._closing:
                return

    async def close(self) -> None:
        """Every buffered delta published (or the publish error raised)."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task

    async def restart(self) -> None:
        """Flush the failed attempt's chunks, then begin a new stream (only if that one began)."""
        await self.close()
        if self.published == 0:
            return  # nothing went out: the next attempt may keep this stream_id
        self._task, self._closing = None, False
        self._replaces, self.stream_id = self.stream_id, uuid.uuid4().hex
        self.published = 0
        self.restarts += 1

    async def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
