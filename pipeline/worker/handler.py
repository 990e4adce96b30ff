"""One request through every stage: validate -> route -> call -> reply -> record.

Transport-free: it receives a `SourceRecord` and writes through a `Publisher`, so it is
tested without Kafka and driven by any consumer loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pipeline.catalog import Catalog
from pipeline.contracts import CORRELATION_HEADER, CompletionReply, CompletionRequest, ErrorCode
from pipeline.settings import Settings
from pipeline.stages.call import call_with_fallback
from pipeline.stages.reply import build_reply, error_reply, usage_events
from pipeline.stages.route import RouteRefusal, plan_route
from pipeline.stages.validate import Rejection, validate_request
from pipeline.transport.llm import ProviderClient
from pipeline.worker.records import Publisher, SourceRecord, dead_letter_headers

log = logging.getLogger(__name__)


class RequestHandler:
    """Runs one request through the stages and publishes everything it produces."""

    def __init__(
        self,
        settings: Settings,
        catalog: Callable[[], Catalog],
        provider: ProviderClient,
        publisher: Publisher,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._provider = provider
        self._publisher = publisher

    async def handle(self, record: SourceRecord) -> None:
        """Never raises for bad input or provider failure: those become replies and DLQ records."""
        started = time.perf_counter()
        checked = validate_request(
            record.value,
            max_bytes=self._settings.max_message_bytes,
            reply_topic_allowed=self._settings.reply_topic_allowed,
        )
        if isinstance(checked, Rejection):
            await self._reject(record, checked)
            return
        try:
            await self._serve(record, checked, started)
        except Exception as exc:  # a bug or an outage of our own outputs: keep the record
            log.exception("request %s failed unexpectedly", checked.request_id)
            await self._dead_letter(record, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", checked.request_id)
            await self._reply(
                record,
                checked.reply_to,
                error_reply(checked.request_id, ErrorCode.INTERNAL_ERROR, "internal error; the request was dead-lettered",
                            metadata=checked.metadata),
            )

    async def _serve(self, record: SourceRecord, request: CompletionRequest, started: float) -> None:
        catalog = self._catalog()  # one snapshot for the whole request
        plan = plan_route(request, catalog)
        if isinstance(plan, RouteRefusal):
            await self._reply(record, request.reply_to,
                              error_reply(request.request_id, plan.code, plan.detail, metadata=request.metadata))
            return
        outcome = await call_with_fallback(request, plan, self._provider, timeout_s=self._settings.provider_timeout_s)
        events = usage_events(request, outcome)
        await asyncio.gather(
            *(
                self._publisher.publish(
                    self._settings.topic_usage,
                    e.model_dump_json().encode(),
                    key=request.request_id.encode(),
                    headers={CORRELATION_HEADER: request.request_id},
                )
                for e in events
            )
        )
        reply = build_reply(request, outcome, (time.perf_counter() - started) * 1000)
        await self._reply(record, request.reply_to, reply)
        log.info(
            "request %s task_type=%s tenant=%s -> %s model=%s attempts=%d cost_usd=%.6f",
            request.request_id, request.task_type, request.tenant, reply.status.value, reply.model,
            len(reply.attempts), reply.cost_usd,
        )

    async def _reject(self, record: SourceRecord, rejection: Rejection) -> None:
        log.warning(
            "rejected record %s[%d]@%d: %s: %s",
            record.topic, record.partition, record.offset, rejection.code.value, rejection.detail,
        )
        if rejection.dead_letter:
            await self._dead_letter(record, rejection.code, rejection.detail, rejection.request_id)
        if rejection.request_id is not None:
            reply = error_reply(rejection.request_id, rejection.code, rejection.detail, metadata=rejection.metadata)
            await self._reply(record, rejection.reply_to, reply)

    async def _dead_letter(self, record: SourceRecord, code: ErrorCode, detail: str, request_id: str | None) -> None:
        await self._publisher.publish(
            self._settings.topic_dlq,
            record.value or b"",
            key=record.key,
            headers=dead_letter_headers(record, code.value, detail, request_id),
        )

    async def _reply(self, record: SourceRecord, reply_to: str | None, reply: CompletionReply) -> None:
        topic = reply_to or self._settings.topic_replies
        await self._publisher.publish(
            topic,
            reply.model_dump_json().encode(),
            key=record.key if record.key is not None else reply.request_id.encode(),
            headers={CORRELATION_HEADER: reply.request_id},
        )
