"""Publish a request and await its reply over Kafka (used by `pipeline send` and the demo).

The client reads its reply topic without a consumer group: it assigns itself every partition
and starts at the end, so it sees only replies published after it started and never takes
partitions from another reader. Replies are matched to requests by `request_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from pipeline.contracts import CORRELATION_HEADER, CompletionReply, CompletionRequest
from pipeline.settings import Settings
from pipeline.transport.kafka import topic_partitions

log = logging.getLogger(__name__)


class ReplyTimeout(TimeoutError):
    """No reply arrived in time; names the request so callers can retry with the same id."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(f"no reply for request {request_id!r} within {timeout_s:g}s")
        self.request_id = request_id


class PipelineClient:
    """Async context manager: `reply = await client.complete(request, timeout=30)`."""

    def __init__(self, settings: Settings, *, reply_topic: str | None = None) -> None:
        self._settings = settings
        self.reply_topic = reply_topic or settings.topic_replies
        self._pending: dict[str, asyncio.Future[CompletionReply]] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=settings.kafka_idempotent_producer,
            acks="all",
            linger_ms=1,

        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        self._reader: asyncio.Task[None] | None = None
        self.stray_replies = 0

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        partitions = await topic_partitions(self._settings.kafka_bootstrap_servers, self.reply_topic)
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, so replies published from here on are seen
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read_replies(), name="reply-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for future in self._pending.values():
            future.cancel()
        await self._consumer.stop()
        await self._producer.stop()

    async def __aenter__(self) -> PipelineClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read_replies(self) -> None:
        async for record in self._consumer:
            try:
                reply = CompletionReply.model_validate_json(record.value or b"")
            except ValidationError:
                self.stray_replies += 1
                continue
            future = self._pending.pop(reply.request_id, None)
            if future is None or future.done():
                self.stray_replies += 1
                continue
            future.set_result(reply)

    async def submit(self, request: CompletionRequest, *, key: bytes | None = None) -> str:
        """Publish without waiting for the reply; returns the request id."""
        await self._producer.send_and_wait(
            self._settings.topic_requests,
            request.model_dump_json(exclude_none=True).encode(),
            key=key if key is not None else request.request_id.encode(),
            headers=[(CORRELATION_HEADER, request.request_id.encode())],
        )
        return request.request_id

    async def publish_raw(self, value: bytes, *, key: bytes | None = None, expect_request_id: str | None = None) -> Any:
        """Publish arbitrary bytes (for testing how the pipeline treats bad input)."""
        future = self._expect(expect_request_id) if expect_request_id else None
        await self._producer.send_and_wait(self._settings.topic_requests, value, key=key)
        return future

    def _expect(self, request_id: str) -> asyncio.Future[CompletionReply]:
        future = self._pending.get(request_id)
        if future is None:
            future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        return future

    async def complete(self, request: CompletionRequest, *, timeout: float = 60.0) -> CompletionReply:
        """Publish `request` and wait for its reply; raises ReplyTimeout."""
        if request.reply_to not in (None, self.reply_topic):
            raise ValueError(f"this client reads {self.reply_topic!r}, not {request.reply_to!r}")
        future = self._expect(request.request_id)
        await self.submit(request)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._pending.pop(request.request_id, None)
            raise ReplyTimeout(request.request_id, timeout) from None

    async def wait_reply(self, request_id: str, *, timeout: float = 60.0) -> CompletionReply:
        try:
            return await asyncio.wait_for(asyncio.shield(self._expect(request_id)), timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise ReplyTimeout(request_id, timeout) from None
