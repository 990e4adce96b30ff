"""Reply and record stages: the CompletionReply for the caller and one UsageEvent per attempt."""

from __future__ import annotations

from typing import Any

from pipeline.contracts.models import (
    Attempt,
    AttemptOutcome,
    CompletionReply,
    CompletionRequest,
    ErrorCode,
    ReplyError,
    ReplyStatus,
    RoutingInfo,
    SkippedCandidate,
    Usage,
    UsageEvent,
)
from pipeline.stages.call import AttemptResult, CallOutcome
from pipeline.stages.route import RoutePlan


def error_reply(
    request_id: str, code: ErrorCode, message: str, *, metadata: dict[str, Any] | None = None, **fields: Any
) -> CompletionReply:
    return CompletionReply(
        request_id=request_id,
        status=ReplyStatus.ERROR,
        error=ReplyError(code=code, message=message),
        metadata=metadata or {},
        **fields,
    )


def _attempt(a: AttemptResult) -> Attempt:
    return Attempt(
        model=a.spec.name,
        provider=a.spec.provider,
        deployment=a.deployment or None,
        outcome=AttemptOutcome.OK if a.ok else AttemptOutcome.ERROR,
        error_code=None if a.ok else a.error.code,  # type: ignore[union-attr]
        latency_ms=round(a.latency_ms, 3),
    )


def routing_info(plan: RoutePlan, outcome: CallOutcome) -> RoutingInfo:
    skipped = [*plan.skipped, *outcome.skipped]
    return RoutingInfo(
        skipped=[SkippedCandidate(model=s.model, reason=s.reason, detail=s.detail) for s in skipped],
        budget_downgrade=outcome.budget_downgrade,
    )


def build_reply(
    request: CompletionRequest, plan: RoutePlan, outcome: CallOutcome, latency_ms: float,
    *, stream_id: str | None = None, stream_chunks: int = 0,
) -> CompletionReply:
    """Success carries the answer; failure names the last error (or the budget) and every attempt.

    `stream_id`/`stream_chunks`: for a streamed request, the stream and how many chunk events
    were published (an error reply names them too, so a reader knows which chunks to drop)."""
    attempts = [_attempt(a) for a in outcome.attempts]
    routing = routing_info(plan, outcome)
    cost = sum(a.cost_usd for a in outcome.attempts)
    answer = outcome.answer
    if answer is not None and answer.response is not None:
        r = answer.response
        return CompletionReply(
            request_id=request.request_id,
            status=ReplyStatus.OK,
            content=r.content,
            tool_calls=list(r.tool_calls) or None,
            finish_reason=r.finish_reason,
            parsed=answer.parsed,
            embeddings=[list(v) for v in r.embeddings] if r.embeddings is not None else None,
            cached=answer.cache_hit,
            stream_id=stream_id,
            stream_chunks=stream_chunks,
            model=answer.spec.name,
            provider=answer.spec.provider,
            usage=Usage(
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                total_tokens=r.prompt_tokens + r.completion_tokens,
            ),
            cost_usd=cost,
            latency_ms=round(latency_ms, 3),
            attempts=attempts,
            routing=routing,
            metadata=request.metadata,
        )
    last = outcome.attempts[-1].error if outcome.attempts else None
    if outcome.deadline_exceeded:
        code = ErrorCode.DEADLINE_EXCEEDED
        message = f"the request's deadline passed after {len(outcome.attempts)} attempt(s)"
        if last is not None:
            message += f" (last error: {last.message})"
    elif not outcome.attempts and outcome.budget_refusal is not None:
        code, message = ErrorCode.BUDGET_EXCEEDED, outcome.budget_refusal.describe()
    elif last is not None and all(a.error is not None and a.error.code is ErrorCode.INVALID_STRUCTURED_OUTPUT
                                  for a in outcome.attempts):
        code = ErrorCode.INVALID_STRUCTURED_OUTPUT
        message = "no answer matched the requested response_format: " + "; ".join(
            a.error.message for a in outcome.attempts if a.error is not None)
    elif outcome.stopped and last is not None:
        code, message = last.code, f"{outcome.attempts[-1].spec.name}: {last.message}"
    elif last is not None and len({a.spec.name for a in outcome.attempts}) == 1 and not outcome.skipped:
        code, message = last.code, f"{outcome.attempts[0].spec.name}: {last.message}"
    else:
        code = ErrorCode.ALL_CANDIDATES_FAILED
        message = "; ".join(
            [f"{a.spec.name}: {a.error.code.value}" for a in outcome.attempts if a.error]
            + [f"{s.model}: {s.reason.value} ({s.detail})" for s in outcome.skipped]
        )
        if last is not None:
            message += f" (last error: {last.message})"
    return error_reply(
        request.request_id, code, message, metadata=request.metadata, cost_usd=cost,
        latency_ms=round(latency_ms, 3), attempts=attempts, routing=routing, stream_id=stream_id,
        stream_chunks=stream_chunks,
    )


def usage_events(
    request: CompletionRequest, plan: RoutePlan, outcome: CallOutcome, *, final: bool = True
) -> list[UsageEvent]:
    """One event per attempt; a call to any model but the first one tried is a fallback.

    `final`: this round's last attempt is the one whose result became the reply."""
    events = []
    skipped = [f"{s.model}:{s.reason.value}" for s in (*plan.skipped, *outcome.skipped)]
    requested = request.model or (plan.candidates[0].spec.name if plan.candidates else "")
    primary = outcome.attempts[0].spec.name if outcome.attempts else None
    for a in outcome.attempts:
        prompt, completion, estimated = a.billed_tokens
        events.append(
            UsageEvent(
                event_id=a.event_id,
                request_id=request.request_id,
                tenant=request.tenant,
                task_type=request.task_type,
                requested_model=requested,
                model=a.spec.name,
                provider=a.spec.provider,
                deployment=a.deployment,
                status=AttemptOutcome.OK if a.ok else AttemptOutcome.ERROR,
                error_code=None if a.ok else a.error.code,  # type: ignore[union-attr]
                http_status=200 if a.ok else (a.error.status or 0),  # type: ignore[union-attr]
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=a.response.cached_tokens if a.response else 0,
                reasoning_tokens=a.response.reasoning_tokens if a.response else 0,
                total_tokens=prompt + completion,
                cost_usd=a.cost_usd,
                latency_ms=round(a.latency_ms, 3),
                ttft_ms=round(a.response.ttft_ms, 3) if a.response else 0.0,
                kind=request.kind,
                streamed=request.stream,
                cache_hit=a.cache_hit,
                tokens_estimated=estimated,
                attempt=a.number,
                is_fallback=a.spec.name != primary,
                is_final=final and a is outcome.attempts[-1],
                route_skipped=skipped,
                budget_downgrade=outcome.budget_downgrade,
                ts=a.started_at,
            )
        )
    return events
