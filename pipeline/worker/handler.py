"""One request through every stage: validate -> route -> call -> reply -> record.

Transport-free: it receives a `SourceRecord` and writes through a `Publisher`, so it is
tested without Kafka and driven by any consumer loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from pipeline.catalog import Catalog
from pipeline.contracts import (
    BudgetAlert,
    CompletionReply,
    CompletionRequest,
    ErrorCode,
    SkipReason,
    UsageEvent,
)
from pipeline.observability import metrics, tracing
from pipeline.settings import Settings
from pipeline.stages.budget import BudgetAlert as BudgetAlertCrossing
from pipeline.stages.budget import BudgetGuard, BudgetRefusal, Reservation
from pipeline.stages.call import (
    AnswerCache,
    CallContext,
    CallOutcome,
    call_with_fallback,
)
from pipeline.stages.deployments import DeploymentPool
from pipeline.stages.reply import build_reply, error_reply, routing_info, usage_events
from pipeline.stages.route import Candidate, RoutePlan, RouteRefusal, plan_route
from pipeline.stages.template import TemplateRefusal, apply_template
from pipeline.stages.validate import Rejection, validate_request
from pipeline.state import ProcessedStore
from pipeline.transport.provider import ProviderClient
from pipeline.worker.chunks import ChunkPublisher
from pipeline.worker.outcome import StoredOutcome, source_of
from pipeline.worker.outputs import Outputs
from pipeline.worker.records import Publisher, SourceRecord

log = logging.getLogger(__name__)


def request_deadline(request: CompletionRequest, published_ms: int | None) -> float | None:
    """Epoch seconds: `deadline_ms` after publishing (or after now), or `deadline_at`; the earlier."""
    deadlines = []
    if request.deadline_ms is not None:
        start = published_ms / 1000 if published_ms else time.time()
        deadlines.append(start + request.deadline_ms / 1000)
    if request.deadline_at is not None:
        at = request.deadline_at if request.deadline_at.tzinfo else request.deadline_at.replace(tzinfo=UTC)
        deadlines.append(at.timestamp())
    return min(deadlines) if deadlines else None


_WAITABLE = frozenset({SkipReason.COOLING_DOWN, SkipReason.RATE_LIMIT_REACHED})


def _backpressure_pause(round_: CallOutcome) -> float | None:
    """Seconds to wait when nothing could answer only because of rate limits or cooldowns."""
    if round_.answer is not None or round_.stopped:
        return None
    errors = [a.error for a in round_.attempts if a.error is not None]
    if any(e.code is not ErrorCode.RATE_LIMITED for e in errors):
        return None
    if any(s.reason not in _WAITABLE for s in round_.skipped):
        return None
    if not errors and not round_.skipped:
        return None
    waits = [s.wait_s for s in round_.skipped if s.wait_s > 0] + [e.retry_after_s or 1.0 for e in errors]
    return max(0.05, min(waits, default=1.0))  # the earliest moment a candidate may be back


class _RequestSpend:
    """Binds the budget guard to one request's tenant, task type and config snapshot."""

    def __init__(self, handler: RequestHandler, catalog: Catalog, request: CompletionRequest) -> None:
        assert handler._budget is not None
        self._handler = handler
        self._guard = handler._budget
        self._controls = catalog.routing.cost_controls
        self._request = request

    async def reserve(self, candidate: Candidate) -> Reservation | BudgetRefusal:
        return await self._guard.reserve(
            self._controls, self._request.tenant, self._request.task_type, candidate.estimated_cost_usd
        )

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        settled = await self._guard.settle(reservation, actual_usd, self._controls.alert_threshold)
        for line, used in settled.spent:
            # Labelled by period (daily, monthly), not its date: one series per budget, not one a day.
            period = line.key.rsplit(":", 2)[-2]
            metrics.BUDGET_REMAINING.labels(line.name, period).set((line.limit - used) / 1e6)
        for alert in settled.alerts:
            await self._handler.publish_alert(alert)


def encode_usage(event: UsageEvent) -> bytes:
    return event.model_dump_json().encode()


@dataclass(frozen=True, slots=True)
class Served:
    """A request's reply and the usage events still to publish with it."""

    reply: CompletionReply
    usage: list[UsageEvent] = field(default_factory=list)


class RequestHandler:
    """Runs one request through the stages and publishes everything it produces."""

    def __init__(
        self,
        settings: Settings,
        catalog: Callable[[], Catalog],
        provider: ProviderClient,
        publisher: Publisher,
        processed: ProcessedStore | None = None,
        budget: BudgetGuard | None = None,
        pool: DeploymentPool | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._provider = provider
        self._publisher = publisher
        self._processed = processed
        self._budget = budget
        self._pool = pool
        self._cache = cache
        self._owner_prefix = uuid.uuid4().hex[:12]
        self._out = Outputs(settings, publisher)

    async def handle(self, record: SourceRecord) -> None:
        """Never raises for bad input or provider failure: those become replies and DLQ records."""
        with tracing.request_span(record.headers, {"messaging.kafka.partition": record.partition,
                                                   "messaging.kafka.offset": record.offset}):
            await self._handle(record)

    async def _handle(self, record: SourceRecord) -> None:
        started = time.perf_counter()
        checked = validate_request(
            record.value,
            max_bytes=self._settings.max_message_bytes,
            reply_topic_allowed=self._settings.reply_topic_allowed,
        )
        if isinstance(checked, Rejection):
            await self._reject(record, checked)
            return
        if self._processed is None:
            # No store to replay from: usage is acknowledged before the reply goes out.
            served = await self._serve_with_retries(record, checked, started)
            await self._publish_usage(checked, served.usage)
            await self._out.reply(record, checked.reply_to, checked.request_id, self._out.encode_reply(served.reply))
            metrics.observe_reply(checked.task_type, served.reply, time.perf_counter() - started)
            return
        owner = f"{self._owner_prefix}:{record.partition}:{record.offset}"
        if not await self._claim(record, checked, owner):
            return
        served_or_failed = asyncio.Event()
        renewer = asyncio.create_task(self._renew_lease(checked.request_id, owner, served_or_failed))
        try:
            served = await self._serve_with_retries(record, checked, started)
            stored = StoredOutcome(self._out.encode_reply(served.reply), tuple(encode_usage(e) for e in served.usage),
                                   source_of(record.topic, record.partition, record.offset))
            try:
                # Stored before anything is published: a crash in between re-sends these same bytes
                # on redelivery (see pipeline/worker/outcome.py).
                await self._processed.complete(checked.request_id, owner, stored.pack())
            except BaseException:
                await self._publish_usage(checked, served.usage)  # the calls happened: record them anyway
                raise
        except BaseException:
            await self._processed.release(checked.request_id, owner)  # a redelivery may try again
            raise
        finally:
            served_or_failed.set()
            renewer.cancel()
        await asyncio.gather(
            self._out.usage(checked.request_id, stored.usage),
            self._out.reply(record, checked.reply_to, checked.request_id, stored.reply),
        )
        metrics.observe_attempts(served.usage)
        metrics.observe_reply(checked.task_type, served.reply, time.perf_counter() - started)

    async def _claim(self, record: SourceRecord, request: CompletionRequest, owner: str) -> bool:
        """True when this task should process the request; False when a stored reply was re-sent."""
        assert self._processed is not None
        while True:
            claim = await self._processed.claim(request.request_id, owner, self._settings.idempotency_lease_s)
            if claim.reply is not None:
                stored = StoredOutcome.unpack(claim.reply)
                log.info("request %s was already answered; re-publishing the stored reply", request.request_id)
                if stored.source == source_of(record.topic, record.partition, record.offset):
                    # Our own record again: its usage may not have been acknowledged before a crash.
                    await self._out.usage(request.request_id, stored.usage)
                await self._out.reply(record, request.reply_to, request.request_id, stored.reply)
                return False
            if claim.acquired:
                return True
            # Someone else is processing this id right now: wait for its reply or its lease to lapse.
            await asyncio.sleep(min(max(claim.retry_after_s, 0.05), 1.0))

    async def _renew_lease(self, request_id: str, owner: str, done: asyncio.Event) -> None:
        """Keeps the lease alive until `done` is set.

        The event, not cancellation alone, ends the loop: a Redis client can swallow a
        CancelledError that lands mid-command (redis/redis-py#2028, #2551), and a renewer that
        outlived its request kept renewing for ever and held up shutdown.
        """
        assert self._processed is not None
        period = self._settings.idempotency_lease_s / 3
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await done.wait()
            if not done.is_set():
                await self._processed.renew(request_id, owner, self._settings.idempotency_lease_s)

    async def _serve_with_retries(self, record: SourceRecord, request: CompletionRequest, started: float) -> Served:
        """A request whose handling raises is retried with backoff, then dead-lettered (error reply)."""
        attempts = self._settings.poison_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._serve(record, request, started)
            except Exception as exc:
                log.exception("request %s failed unexpectedly (attempt %d of %d)", request.request_id, attempt,
                              attempts)
                if attempt < attempts:
                    await asyncio.sleep(self._settings.poison_backoff_s * 2 ** (attempt - 1))
                    continue
                await self._out.dead_letter(record, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}",
                                            request.request_id, attempts=attempts)
                return Served(error_reply(request.request_id, ErrorCode.INTERNAL_ERROR,
                                          f"internal error after {attempts} attempts; the request was dead-lettered",
                                          metadata=request.metadata))
        raise AssertionError("unreachable")

    async def _serve(self, record: SourceRecord, request: CompletionRequest, started: float) -> Served:
        """Route and call; returns the reply with the usage events of its last round, unpublished."""
        catalog = self._catalog()  # one snapshot for the whole request
        rendered = apply_template(request, catalog.templates)
        if isinstance(rendered, TemplateRefusal):
            return Served(error_reply(request.request_id, rendered.code, rendered.detail, metadata=request.metadata))
        request = rendered
        plan = plan_route(request, catalog, default_completion_tokens=self._settings.estimate_completion_tokens)
        if isinstance(plan, RouteRefusal):
            return Served(error_reply(
                request.request_id, plan.code, plan.detail, metadata=request.metadata,
                routing=routing_info(RoutePlan((), plan.skipped), CallOutcome()),
            ))
        spend = _RequestSpend(self, catalog, request) if self._budget is not None else None
        chunks = self._chunk_publisher(record, request) if request.stream else None
        ctx = CallContext(self._provider, self._settings.provider_timeout_s, self._pool, spend,
                          request_deadline(request, record.timestamp_ms), on_delta=chunks, cache=self._cache)
        try:
            outcome, usage = await self._call(request, plan, ctx)
        except BaseException:
            if chunks is not None:
                await chunks.abort()
            raise
        try:
            if chunks is not None:
                await chunks.close()  # every chunk acknowledged before the final reply is built
            reply = build_reply(request, plan, outcome, (time.perf_counter() - started) * 1000,
                                stream_id=chunks.stream_id if chunks else None,
                                stream_chunks=chunks.published if chunks else 0)
            if chunks is not None and chunks.restarts:
                reply = reply.model_copy(update={"stream_restarts": chunks.restarts})
        except BaseException:
            await self._publish_usage(request, usage)  # the calls happened: record them before failing
            raise
        log.info(
            "request %s task_type=%s tenant=%s -> %s model=%s attempts=%d cost_usd=%.6f",
            request.request_id, request.task_type, request.tenant, reply.status.value, reply.model,
            len(reply.attempts), reply.cost_usd,
            extra={"request_id": request.request_id, "tenant": request.tenant, "task_type": request.task_type,
                   "model": reply.model, "status": reply.status.value, "attempts": len(reply.attempts),
                   "cost_usd": reply.cost_usd, "error_code": reply.error.code.value if reply.error else None},
        )
        return Served(reply, usage)

    def _chunk_publisher(self, record: SourceRecord, request: CompletionRequest) -> ChunkPublisher:
        topic, key = self._out.reply_target(record, request.reply_to, request.request_id)
        return ChunkPublisher(self._publisher, topic, key, request.request_id)

    async def _call(
        self, request: CompletionRequest, plan: RoutePlan, ctx: CallContext
    ) -> tuple[CallOutcome, list[UsageEvent]]:
        """The fallback chain; when every candidate is rate-limited or cooling down, wait and go round again.

        Usage of a round that goes round again is published at once; the last round's is returned,
        to go out with the reply.

        Waiting holds this request's in-flight slot, so a rate-limited fleet of providers fills
        the partition windows and the intake pauses: back-pressure instead of failed requests,
        for at most `rate_limit_wait_max_s` and never past the request's deadline.
        """
        outcome = CallOutcome()
        waited = 0.0
        while True:
            round_ = await call_with_fallback(request, plan, ctx, first_attempt=len(outcome.attempts) + 1)
            pause = _backpressure_pause(round_)
            remaining = ctx.remaining_s()
            go_round = not (
                pause is None or round_.deadline_exceeded or waited + pause > self._settings.rate_limit_wait_max_s
                or (remaining is not None and pause >= remaining)
            )
            events = usage_events(request, plan, round_, final=not go_round)
            outcome.attempts.extend(round_.attempts)
            outcome.skipped.extend(round_.skipped)
            outcome.budget_refusal = outcome.budget_refusal or round_.budget_refusal
            outcome.deadline_exceeded = round_.deadline_exceeded
            outcome.stopped = round_.stopped
            if not go_round:
                return outcome, events
            await self._publish_usage(request, events)
            assert pause is not None
            log.info("request %s: every candidate is rate-limited or cooling down; waiting %.1fs",
                     request.request_id, pause)
            await asyncio.sleep(pause)
            waited += pause

    async def _publish_usage(self, request: CompletionRequest, events: list[UsageEvent]) -> None:
        await self._out.usage(request.request_id, [encode_usage(e) for e in events])
        metrics.observe_attempts(events)

    async def publish_alert(self, alert: BudgetAlertCrossing) -> None:
        """One alert per budget window (the ledger guarantees once), to the alerts topic and the log."""
        assert self._budget is not None
        (spent,) = await self._budget.ledger.values([alert.line.key])
        event = BudgetAlert(budget=alert.line.name, key=alert.line.key, limit_usd=alert.line.limit / 1e6,
                            spent_usd=spent / 1e6, threshold=alert.threshold)
        log.warning("budget alert: %s at %.6f of %.6f USD (threshold %.0f%%)", event.budget, event.spent_usd,
                    event.limit_usd, event.threshold * 100)
        await self._publisher.publish(self._settings.topic_alerts, event.model_dump_json().encode(),
                                      key=alert.line.key.encode(), headers={})

    async def give_up(self, record: SourceRecord, exc: BaseException, attempts: int) -> None:
        """The intake stopped retrying a record whose handling kept raising: dead letter, and an
        error reply when its request_id can be read."""
        checked = validate_request(record.value, max_bytes=self._settings.max_message_bytes,
                                   reply_topic_allowed=self._settings.reply_topic_allowed)
        request_id = checked.request_id if isinstance(checked, (CompletionRequest, Rejection)) else None
        detail = f"{type(exc).__name__}: {exc}"
        await self._out.dead_letter(record, ErrorCode.INTERNAL_ERROR, detail, request_id, attempts=attempts)
        if request_id is not None:
            reply_to = checked.reply_to
            reply = error_reply(request_id, ErrorCode.INTERNAL_ERROR,
                                f"internal error after {attempts} attempts; the request was dead-lettered")
            await self._out.reply(record, reply_to, request_id, self._out.encode_reply(reply))

    async def undecodable(self, topic: str, partition: int, offset: int, exc: BaseException) -> None:
        """A record the Kafka client cannot decode (e.g. a header key that is not UTF-8): its bytes
        cannot be read, so the dead letter carries its position and the reason, not its value."""
        record = SourceRecord(topic=topic, partition=partition, offset=offset, value=None)
        await self._out.dead_letter(record, ErrorCode.UNDECODABLE_RECORD, f"{type(exc).__name__}: {exc}", None,
                                    value_omitted="the Kafka client could not decode the record")

    async def _reject(self, record: SourceRecord, rejection: Rejection) -> None:
        log.warning(
            "rejected record %s[%d]@%d: %s: %s",
            record.topic, record.partition, record.offset, rejection.code.value, rejection.detail,
        )
        if rejection.dead_letter:
            await self._out.dead_letter(record, rejection.code, rejection.detail, rejection.request_id)
        if rejection.request_id is not None:
            reply = error_reply(rejection.request_id, rejection.code, rejection.detail, metadata=rejection.metadata)
            await self._out.reply(record, rejection.reply_to, reply.request_id, self._out.encode_reply(reply))
            metrics.observe_reply("", reply, 0.0)
