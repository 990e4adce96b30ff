"""Everything a request produces, written so that no record can hold its partition for ever.

Every reply is built to fit the producer's limit (an oversized metadata echo is dropped, with
`metadata_truncated`). A record a topic refuses for good (`PublishRefused`: too large, invalid
or forbidden topic) is never retried: an undeliverable reply dead-letters its request, a dead
letter that does not fit goes out without the original bytes, and what even the DLQ refuses is
logged with its offset, counted in `llm_records_skipped_total` and skipped. Outages (any other
exception) propagate, so the intake retries them while it holds the partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipeline.contracts.models import (
    CORRELATION_HEADER,
    BudgetAlert,
    CompletionReply,
    DeadLetterHeader,
    ErrorCode,
    ReplyError,
    ReplyStatus,
    UsageEvent,
)
from pipeline.observability import metrics, tracing
from pipeline.settings import Settings
from pipeline.transport.records import Publisher, PublishRefused, SourceRecord, dead_letter_headers, record_size

log = logging.getLogger(__name__)

#: Room left under the record limit for headers (correlation id, trace context, DLQ headers).
HEADER_ALLOWANCE = 16 * 1024


def encode_usage(event: UsageEvent) -> bytes:
    return event.model_dump_json().encode()


def _where(record: SourceRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


class Outputs:
    """Replies, usage events and dead letters of the requests one worker handles."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self._settings = settings
        self._publisher = publisher
        self.value_limit = settings.record_limit_bytes - HEADER_ALLOWANCE

    async def alert(self, alert: BudgetAlert, *, key: bytes) -> None:
        """A budget alert to the alerts topic (once per budget window: the ledger sees to that)."""
        await self._publisher.publish(self._settings.topic_alerts, alert.model_dump_json().encode(), key=key,
                                      headers={})

    # -- building -----------------------------------------------------------------------
    def encode_reply(self, reply: CompletionReply) -> bytes:
        """The reply's bytes, guaranteed to fit: metadata dropped (flagged) if it does not; an
        error reply if even that does not fit or the reply cannot be serialized at all."""
        try:
            value = reply.model_dump_json().encode()
            if len(value) <= self.value_limit:
                return value
            if reply.metadata:
                value = reply.model_copy(update={"metadata": {}, "metadata_truncated": True}).model_dump_json().encode()
                if len(value) <= self.value_limit:
                    return value
            problem = ErrorCode.TOO_LARGE, f"the reply ({len(value)} bytes) exceeds the limit of {self.value_limit}"
        except ValueError as exc:  # pydantic_core.PydanticSerializationError: a value JSON cannot hold
            problem = ErrorCode.INTERNAL_ERROR, f"the reply could not be serialized: {exc}"[:500]
        log.error("request %s: %s; sending an error reply instead", reply.request_id, problem[1])
        return reply.model_copy(update={
            "status": ReplyStatus.ERROR, "content": None, "tool_calls": None, "parsed": None, "embeddings": None,
            "results": None,
            "metadata": {}, "metadata_truncated": bool(reply.metadata),
            "error": ReplyError(code=problem[0], message=problem[1]),
        }).model_dump_json().encode()

    def reply_target(self, record: SourceRecord, reply_to: str | None, request_id: str) -> tuple[str, bytes]:
        """Topic and key of a request's reply (and of its chunks: same partition, in order).

        The tenant's patterns were checked by `stages/validate.py`; here, whatever they say, a
        reply never goes into a topic the worker consumes or writes for its own purposes."""
        if reply_to is not None and self._settings.reply_topic_policy.is_own(reply_to):
            log.error("request %s: reply_to %s is one of the worker's own topics; replying on %s instead",
                      request_id, reply_to, self._settings.topic_replies)
            reply_to = None
        return reply_to or self._settings.topic_replies, record.key if record.key is not None else request_id.encode()

    # -- writing ------------------------------------------------------------------------
    async def reply(self, record: SourceRecord, reply_to: str | None, request_id: str, value: bytes) -> None:
        """Publish a reply; one its topic refuses dead-letters the request instead."""
        topic, key = self.reply_target(record, reply_to, request_id)
        try:
            await self._publisher.publish(topic, value, key=key,
                                          headers=tracing.inject({CORRELATION_HEADER: request_id}))
        except PublishRefused as refused:
            metrics.PUBLISH_REFUSED.labels("reply", refused.reason).inc()
            log.error("request %s: the reply to %s was refused for good (%s); dead-lettering the request",
                      request_id, topic, refused)
            await self.dead_letter(record, ErrorCode.REPLY_UNDELIVERABLE, str(refused), request_id)

    async def usage(self, request_id: str, values: Sequence[bytes]) -> None:
        for value in values:
            try:
                await self._publisher.publish(self._settings.topic_usage, value, key=request_id.encode(),
                                              headers=tracing.inject({CORRELATION_HEADER: request_id}))
            except PublishRefused as refused:  # the usage topic itself is misconfigured: nothing to retry
                metrics.PUBLISH_REFUSED.labels("usage", refused.reason).inc()
                log.error("request %s: a usage event was refused for good (%s); it is lost: %s",
                          request_id, refused, value.decode(errors="replace")[:2000])

    async def dead_letter(
        self, record: SourceRecord, code: ErrorCode, detail: str, request_id: str | None, *,
        attempts: int | None = None, value_omitted: str | None = None,
    ) -> None:
        """The original bytes to the DLQ with the reason; without them if they do not fit; else skipped."""
        topic = self._settings.topic_dlq
        headers = dead_letter_headers(record, code.value, detail, request_id)
        if attempts is not None:
            headers[DeadLetterHeader.ATTEMPTS.value] = str(attempts)
        if value_omitted is not None:
            headers[DeadLetterHeader.VALUE_OMITTED.value] = value_omitted
        value = record.value or b""
        if record_size(value, record.key, headers) > self._settings.record_limit_bytes:
            headers[DeadLetterHeader.VALUE_OMITTED.value] = f"{len(value)} bytes: over the record limit"
            value = b""
        try:
            await self._publisher.publish(topic, value, key=record.key, headers=headers)
        except PublishRefused as refused:
            metrics.PUBLISH_REFUSED.labels("dead_letter", refused.reason).inc()
            log.warning("the dead letter of %s was refused (%s)%s", _where(record), refused,
                        "" if not value else "; sending it without the original bytes")
            if not value:
                self._skip(record, code, refused)
                return
            headers[DeadLetterHeader.VALUE_OMITTED.value] = f"{len(value)} bytes: {refused.reason}"
            try:
                await self._publisher.publish(topic, b"", key=record.key, headers=headers)
            except PublishRefused as again:
                self._skip(record, code, again)
                return
        metrics.DEAD_LETTERS.labels(topic, code.value).inc()

    def _skip(self, record: SourceRecord, code: ErrorCode, refused: PublishRefused) -> None:
        metrics.RECORDS_SKIPPED.labels(record.topic, code.value).inc()
        log.error("record %s (%s) could not be dead-lettered (%s): skipped; its bytes are still in %s until "
                  "retention ends", _where(record), code.value, refused, record.topic)
