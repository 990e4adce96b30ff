"""The stages of one validated request: template -> route -> call -> reply, and what they spend.

`StagePipeline.serve()` returns the reply with its usage events, unpublished (the handler stores
them before anything goes out). It owns the back-pressure rounds (every candidate rate-limited
or cooling down: wait and go round again) and binds the budget guard to the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from pipeline.catalog import Catalog
from pipeline.contracts.models import BudgetAlert, CompletionReply, CompletionRequest, ErrorCode, SkipReason, UsageEvent
from pipeline.observability import metrics
from pipeline.settings import Settings
from pipeline.stages.budget import BudgetGuard, BudgetRefusal, CrossedThreshold, Reservation
from pipeline.stages.call import AnswerCache, CallContext, CallOutcome, call_with_fallback
from pipeline.stages.deployments import DeploymentPool
from pipeline.stages.reply import build_reply, error_reply, routing_info, usage_events
from pipeline.stages.route import Candidate, RoutePlan, RouteRefusal, plan_route
from pipeline.stages.template import TemplateRefusal, apply_template
from pipeline.transport.provider import ProviderClient
from pipeline.transport.records import Publisher, SourceRecord
from pipeline.worker.chunks import ChunkPublisher
from pipeline.worker.outputs import Outputs, encode_usage

log = logging.getLogger(__name__)


class FailedAfterCalls(Exception):
    """Building the reply failed after the provider calls were made (and recorded): trying the
    request again would pay for them twice, so it is dead-lettered at once."""


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


class RequestSpend:
    """Binds the budget guard to one request's tenant, task type and config snapshot."""

    def __init__(self, stages: StagePipeline, catalog: Catalog, request: CompletionRequest) -> None:
        assert stages.budget is not None
        self._stages = stages
        self._guard = stages.budget
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
            await self._stages.publish_alert(alert)


@dataclass(frozen=True, slots=True)
class Served:
    """A request's reply and the usage events still to publish with it."""

    reply: CompletionReply
    usage: list[UsageEvent] = field(default_factory=list)


class StagePipeline:
    """Route and call one validated request; stream its chunks; bind its budget."""

    def __init__(
        self, settings: Settings, catalog: Callable[[], Catalog], provider: ProviderClient, publisher: Publisher,
        outputs: Outputs, budget: BudgetGuard | None = None, pool: DeploymentPool | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._provider = provider
        self._publisher = publisher
        self._out = outputs
        self.budget = budget
        self._pool = pool
        self._cache = cache

    async def serve(self, record: SourceRecord, request: CompletionRequest, started: float) -> Served:
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
        spend = RequestSpend(self, catalog, request) if self.budget is not None else None
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
                                stream_chunks=chunks.published if chunks else 0,
                                stream_restarts=chunks.restarts if chunks else 0)
        except Exception as exc:
            await self.publish_usage(request, usage)  # the calls happened: record them before failing
            raise FailedAfterCalls(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            await self.publish_usage(request, usage)
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
            await self.publish_usage(request, events)
            assert pause is not None
            log.info("request %s: every candidate is rate-limited or cooling down; waiting %.1fs",
                     request.request_id, pause)
            await asyncio.sleep(pause)
            waited += pause

    async def publish_usage(self, request: CompletionRequest, events: list[UsageEvent]) -> None:
        await self._out.usage(request.request_id, [encode_usage(e) for e in events])
        metrics.observe_attempts(events)

    async def publish_alert(self, alert: CrossedThreshold) -> None:
        """One alert per budget window (the ledger guarantees once), to the alerts topic and the log."""
        assert self.budget is not None
        (spent,) = await self.budget.ledger.values([alert.line.key])
        event = BudgetAlert(budget=alert.line.name, key=alert.line.key, limit_usd=alert.line.limit / 1e6,
                            spent_usd=spent / 1e6, threshold=alert.threshold)
        log.warning("budget alert: %s at %.6f of %.6f USD (threshold %.0f%%)", event.budget, event.spent_usd,
                    event.limit_usd, event.threshold * 100)
        await self._out.alert(event, key=alert.line.key.encode())
