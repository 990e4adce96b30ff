"""PipelineClient: publish a request to Kafka and await its reply like an HTTP call.

How replies reach the right caller (and what it costs):

- By default a client reads the shared reply topic (`llm.replies`) *without a consumer group*:
  it assigns itself every partition and starts at the end, so it sees only replies published
  after it started, and it never takes partitions from another reader. Two clients can never
  steal each other's replies: each reads every reply and keeps those whose `request_id` it is
  waiting for. The cost is that every client reads all reply traffic: N clients x R replies/s.
  That is nothing for tens of clients and a few thousand replies per second.
- Beyond that, give each service instance its own reply topic (`reply_topic="llm.replies.<name>"`,
  allowed by the default `PIPELINE_ALLOWED_REPLY_TOPICS=llm.replies*`; `create_reply_topic=True`
  creates it). Requests then carry `reply_to`, and a client reads only its own replies. The cost
  moves to the broker: one topic per instance, to delete when the instance goes away.

Replies are matched by `request_id` (also in the `correlation_id` header). A reply nobody here
waits for (another client's, a late one after a timeout, a duplicate) is ignored and counted in
`stray_replies`. Publishing retries a failed send with the *same* `request_id`, so the
pipeline's idempotency store turns a retry into at most one provider call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.client._replies import ReplyReader
from pipeline.contracts.models import (
    CORRELATION_HEADER,
    ChatMessage,
    CompletionChunk,
    CompletionReply,
    CompletionRequest,
    ReplyError,
    Usage,
)
from pipeline.settings import Settings
from pipeline.stages.authenticate import SIGNATURE_HEADER, TenantTopics, sign
from pipeline.transport.kafka import ensure_topics, kafka_consumer, kafka_producer, topic_partitions
from pipeline.transport.records import SourceRecord

log = logging.getLogger(__name__)


class ClientError(Exception):
    """Base of the client's own errors."""


class ReplyTimeout(ClientError, TimeoutError):
    """No reply arrived in time; names the request so callers can retry with the same id."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(f"no reply for request {request_id!r} within {timeout_s:g}s")
        self.request_id = request_id
        self.timeout_s = timeout_s


class PublishError(ClientError):
    """The request could not be published after retries; publishing it again is safe."""

    def __init__(self, request_id: str, attempts: int, cause: BaseException) -> None:
        super().__init__(f"could not publish request {request_id!r} after {attempts} attempt(s): {cause}")
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class StreamRestart:
    """Yielded by `stream()` when the pipeline abandoned a partial stream (its attempt failed
    part way) and the answer starts again: discard the text received so far."""

    request_id: str
    discarded_stream_id: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """The slim answer of the service helpers (`process_text`, `process_with_template`)."""

    content: str | None
    model: str | None
    usage: Usage
    finish_reason: str | None
    error: ReplyError | None
    reply: CompletionReply

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def of(cls, reply: CompletionReply) -> ProcessResult:
        return cls(reply.content, reply.model, reply.usage, reply.finish_reason, reply.error, reply)


_Waiter = asyncio.Future[CompletionReply]


class PipelineClient:
    """`async with PipelineClient(settings) as client: reply = await client.complete(messages=..., task_type=...)`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reply_topic: str | None = None,
        create_reply_topic: bool = False,
        publish_attempts: int = 3,
        publish_backoff_s: float = 0.2,
        signing_key: str | bytes | None = None,
    ) -> None:
        self._settings = settings or Settings()
        # Signature mode (docs/security.md): every request is signed with the tenant's key.
        secret = signing_key if signing_key is not None else (
            self._settings.tenant_signing_key.get_secret_value() if self._settings.tenant_signing_key else None)
        self._signing_key = secret.encode() if isinstance(secret, str) else secret
        self.reply_topic = reply_topic or self._settings.topic_replies
        self._create_reply_topic = create_reply_topic
        self._publish_attempts = max(1, publish_attempts)
        self._publish_backoff_s = publish_backoff_s
        self._pending: dict[str, _Waiter] = {}
        self._streams: dict[str, asyncio.Queue[CompletionChunk | CompletionReply]] = {}
        # Made by start(): a client that is built (say, only to build requests) and never started
        # holds no sockets and leaves nothing to close.
        self._producer_: AIOKafkaProducer | None = None
        self._reader: ReplyReader | None = None
        self.stray_replies = 0
        self.published = 0

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._create_reply_topic:
            await ensure_topics(self._settings, [self.reply_topic],
                                partitions=self._settings.topic_partitions,
                                max_message_bytes=self._settings.record_limit_bytes)
        self._producer_ = kafka_producer(
            self._settings,
            enable_idempotence=self._settings.kafka_idempotent_producer,
            acks="all",
            linger_ms=1,
            max_request_size=self._settings.record_limit_bytes,
        )
        await self._producer.start()
        consumer = kafka_consumer(
            self._settings,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
        )
        try:
            partitions = await topic_partitions(self._settings, self.reply_topic)
            reader = ReplyReader(consumer, self.reply_topic, sorted(partitions), self._on_reply)
            await reader.start()
        except BaseException:  # `async with` never calls stop() when start() fails: close what started
            await consumer.stop()
            producer, self._producer_ = self._producer_, None
            if producer is not None:
                await producer.stop()
            raise
        self._reader = reader

    async def stop(self) -> None:
        reader, producer, self._reader, self._producer_ = self._reader, self._producer_, None, None
        if reader is not None:
            await reader.stop()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> PipelineClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._producer_ is None:
            raise RuntimeError("PipelineClient is not started: use `async with PipelineClient(...)` or start()")
        return self._producer_

    @property
    def outstanding(self) -> int:
        """Requests published (or being published) whose reply has not arrived yet."""
        return len(self._pending)

    # -- building requests --------------------------------------------------------------
    def build_request(
        self,
        request: CompletionRequest | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, Any]] | None = None,
        task_type: str = "default",
        tenant: str = "default",
        model: str | None = None,
        max_cost_usd: float | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> CompletionRequest:
        """A request from keyword arguments (any CompletionRequest field); raises ValidationError."""
        if request is not None:
            if messages is not None or fields:
                raise TypeError("pass either a CompletionRequest or keyword fields, not both")
            built = request
        else:
            doc: dict[str, Any] = {
                "request_id": request_id or str(uuid.uuid4()), "task_type": task_type, "tenant": tenant, **fields,
            }
            if messages is not None:
                doc["messages"] = [m.model_dump(exclude_none=True) if isinstance(m, ChatMessage) else m
                                   for m in messages]
            if model is not None:
                doc["model"] = model
            if max_cost_usd is not None:
                doc["max_cost_usd"] = max_cost_usd
            built = CompletionRequest.model_validate(doc)
        if built.reply_to is None and self.reply_topic != self._settings.topic_replies:  # a topic of its own
            built = built.model_copy(update={"reply_to": self.reply_topic})
        if built.reply_to not in (None, self.reply_topic):
            raise ValueError(f"this client reads {self.reply_topic!r}, not {built.reply_to!r}")
        return built

    # -- publishing ---------------------------------------------------------------------
    async def _publish(self, request: CompletionRequest, key: bytes | None) -> None:
        value = request.model_dump_json(exclude_none=True).encode()
        key = key if key is not None else request.request_id.encode()
        headers = [(CORRELATION_HEADER, request.request_id.encode())]
        if self._signing_key is not None:
            headers.append((SIGNATURE_HEADER, sign(self._signing_key, key, value).encode()))
        topic = self._settings.topic_requests
        if self._settings.tenant_auth == "topic":  # the tenant's own topic: its ACL says who may write it
            topic = TenantTopics(self._settings.tenant_topic_pattern).topic_for(request.tenant)
        for attempt in range(1, self._publish_attempts + 1):
            try:
                await self._producer.send_and_wait(topic, value, key=key, headers=headers)
                self.published += 1
                return
            except KafkaError as exc:  # the same request_id again: the pipeline deduplicates
                if attempt == self._publish_attempts:
                    raise PublishError(request.request_id, attempt, exc) from exc
                log.warning("publishing request %s failed (%s); retrying", request.request_id, exc)
                await asyncio.sleep(self._publish_backoff_s * 2 ** (attempt - 1))

    async def submit(self, request: CompletionRequest | None = None, *, key: bytes | None = None,
                     **fields: Any) -> str:
        """Publish without waiting for the reply; returns the request id (read it with `wait_reply`)."""
        built = self.build_request(request, **fields)
        self._expect(built.request_id)
        try:
            await self._publish(built, key)
        except BaseException:
            self._forget(built.request_id)
            raise
        return built.request_id

    async def publish_raw(self, value: bytes, *, key: bytes | None = None, expect_request_id: str | None = None) -> Any:
        """Publish arbitrary bytes (for testing how the pipeline treats bad input)."""
        future = self._expect(expect_request_id) if expect_request_id else None
        await self._producer.send_and_wait(self._settings.topic_requests, value, key=key)
        return future

    # -- awaiting -----------------------------------------------------------------------
    def _expect(self, request_id: str) -> _Waiter:
        future = self._pending.get(request_id)
        if future is None or future.done():
            future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        return future

    def _forget(self, request_id: str) -> None:
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait_reply(self, request_id: str, *, timeout: float = 60.0) -> CompletionReply:
        """The reply to a submitted request; ReplyTimeout names it. Cancelling stops the wait only."""
        future = self._expect(request_id)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ReplyTimeout(request_id, timeout) from None
        finally:  # timed out or cancelled: stop waiting, so a late reply counts as stray
            if self._pending.get(request_id) is future:
                self._forget(request_id)

    async def complete(self, request: CompletionRequest | None = None, *, timeout: float = 60.0,
                       key: bytes | None = None, **fields: Any) -> CompletionReply:
        """Publish and await the reply: `await client.complete(messages=[...], task_type="summarize")`.

        Raises ReplyTimeout (naming the request: publish it again with the same id to retry
        safely), PublishError, or pydantic's ValidationError for a request that is not valid."""
        request_id = await self.submit(request, key=key, **fields)
        return await self.wait_reply(request_id, timeout=timeout)

    async def stream(
        self, request: CompletionRequest | None = None, *, timeout: float = 60.0, key: bytes | None = None,
        **fields: Any,
    ) -> AsyncGenerator[CompletionChunk | StreamRestart | CompletionReply, None]:
        """Chunks as they arrive, then the final reply (which carries the whole content).

        If the pipeline abandons a partial stream (its attempt failed part way; a retry or a
        fallback answers anew), a `StreamRestart` comes first: drop the text received so far.
        Chunks of an abandoned stream never follow it, so joining the deltas after the last
        restart gives exactly the reply's content. An error reply means no answer: what was
        streamed is void. `timeout` bounds the wait for each event."""
        built = self.build_request(request, stream=True, **fields) if request is None else \
            self.build_request(request.model_copy(update={"stream": True}))
        queue: asyncio.Queue[CompletionChunk | CompletionReply] = asyncio.Queue()
        self._streams[built.request_id] = queue
        try:
            await self._publish(built, key)
            current: str | None = None
            abandoned: set[str] = set()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise ReplyTimeout(built.request_id, timeout) from None
                if isinstance(event, CompletionChunk):
                    if event.stream_id in abandoned:
                        continue  # a late chunk of a stream already given up (a redelivered request)
                    if current is not None and event.stream_id != current:
                        abandoned.add(current)
                        yield StreamRestart(built.request_id, current, event.stream_id)
                    current = event.stream_id
                yield event
                if isinstance(event, CompletionReply):
                    return
        finally:
            self._streams.pop(built.request_id, None)

    # -- the service helpers ------------------------------------------------------------
    async def process_text(self, text: str, task_type: str = "default", *, system: str | None = None,
                           timeout: float = 60.0, **fields: Any) -> ProcessResult:
        """One user message in, the answer out: `(await client.process_text("...", "summarize")).content`."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return ProcessResult.of(await self.complete(messages=messages, task_type=task_type, timeout=timeout, **fields))

    async def process_with_template(self, name: str, variables: dict[str, Any] | None = None, *,
                                    task_type: str | None = None, timeout: float = 60.0,
                                    **fields: Any) -> ProcessResult:
        """A template from config/templates.yaml; `task_type` defaults to the template's name."""
        reply = await self.complete(template=name, variables=variables or {}, task_type=task_type or name,
                                    timeout=timeout, **fields)
        return ProcessResult.of(reply)

    # -- reading ------------------------------------------------------------------------
    def _on_reply(self, record: SourceRecord) -> None:
        """Route one record of the reply topic to the caller awaiting it; anything else is stray."""
        try:
            doc = orjson.loads(record.value or b"")
            event: CompletionChunk | CompletionReply = (
                CompletionChunk.model_validate(doc) if isinstance(doc, dict) and doc.get("type") == "chunk"
                else CompletionReply.model_validate(doc)
            )
        except (orjson.JSONDecodeError, ValidationError):
            self.stray_replies += 1
            return
        queue = self._streams.get(event.request_id)
        if queue is not None:
            queue.put_nowait(event)
            return
        if isinstance(event, CompletionChunk):
            return  # chunks of a request awaited with complete(): its reply has the content
        future = self._pending.pop(event.request_id, None)
        if future is None or future.done():
            self.stray_replies += 1
            return
        future.set_result(event)
