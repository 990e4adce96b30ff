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
    SkipReason,
    Usage,
    UsageEvent,
)
from pipeline.stages.call import AttemptResult, CallOutcome
from pipeline.stages.route import RoutePlan, Skipped
from pipeline.transport.provider import ProviderError, ProviderResponse


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
        provider=a.provider,
        deployment=a.deployment or None,
        outcome=AttemptOutcome.OK if a.ok else AttemptOutcome.ERROR,
        error_code=None if a.ok else a.error.code,  # type: ignore[union-attr]
        latency_ms=round(a.latency_ms, 3),
    )


def every_skip(plan: RoutePlan, outcome: CallOutcome) -> list[Skipped]:
    """The candidates passed over: at routing, at call time, and the conditional fallbacks no
    failure of their kind called."""
    not_triggered = [Skipped(p.model, SkipReason.FALLBACK_NOT_TRIGGERED, p.detail) for p in outcome.passed_over]
    return [*plan.skipped, *outcome.skipped, *not_triggered]


def routing_info(plan: RoutePlan, outcome: CallOutcome) -> RoutingInfo:
    skipped = every_skip(plan, outcome)
    return RoutingInfo(
        skipped=[SkippedCandidate(model=s.model, reason=s.reason, detail=s.detail) for s in skipped],
        budget_downgrade=outcome.budget_downgrade,
        fallbacks=list(plan.fallbacks),
        fallbacks_source=plan.fallbacks_source,
    )


def build_reply(
    request: CompletionRequest, plan: RoutePlan, outcome: CallOutcome, latency_ms: float,
    *, stream_id: str | None = None, stream_chunks: int = 0, stream_restarts: int = 0,
) -> CompletionReply:
    """Success carries the answer; failure names the last error (or the budget) and every attempt.

    `stream_id`/`stream_chunks`/`stream_restarts`: for a streamed request, the stream, how many
    chunk events of it were published and how many partial streams were abandoned before it (an
    error reply names them too, so a reader knows which chunks to drop)."""
    common: dict[str, Any] = {
        "cost_usd": sum(a.cost_usd for a in outcome.attempts),
        "latency_ms": round(latency_ms, 3),
        "attempts": [_attempt(a) for a in outcome.attempts],
        "routing": routing_info(plan, outcome),
        "stream_id": stream_id,
        "stream_chunks": stream_chunks,
        "stream_restarts": stream_restarts,
    }
    answer = outcome.answer
    if answer is not None and answer.response is not None:
        return _answer_reply(request, answer, answer.response, common)
    code, message = _failure(outcome)
    return error_reply(request.request_id, code, message, metadata=request.metadata, **common)


def _answer_reply(
    request: CompletionRequest, answer: AttemptResult, r: ProviderResponse, common: dict[str, Any]
) -> CompletionReply:
    """The OK reply: the answering attempt's content (or tool calls, or vectors) and its usage."""
    return CompletionReply(
        request_id=request.request_id,
        status=ReplyStatus.OK,
        content=r.content,
        tool_calls=list(r.tool_calls) or None,
        finish_reason=r.finish_reason,
        choices=list(r.choices) or None,
        logprobs=r.logprobs,
        parsed=answer.parsed,
        embeddings=[list(v) for v in r.embeddings] if r.embeddings is not None else None,
        results=list(r.rerank_results) if r.rerank_results is not None else None,
        cached=answer.cache_hit,
        model=answer.spec.name,
        provider=answer.provider,
        usage=Usage(
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            total_tokens=r.prompt_tokens + r.completion_tokens,
        ),
        metadata=request.metadata,
        **common,
    )


def _failure(outcome: CallOutcome) -> tuple[ErrorCode, str]:
    """The error code and message of a chain that did not answer, most telling cause first: the
    deadline, a budget that refused every candidate, answers that all failed the response_format,
    a request-level error, the one model tried; else every candidate failed."""
    attempts = outcome.attempts
    last = attempts[-1].error if attempts else None
    if outcome.deadline_exceeded:
        return ErrorCode.DEADLINE_EXCEEDED, _with_last(
            f"the request's deadline passed after {len(attempts)} attempt(s)", last)
    if not attempts and outcome.budget_refusal is not None:
        return ErrorCode.BUDGET_EXCEEDED, outcome.budget_refusal.describe()
    if last is None:
        return ErrorCode.ALL_CANDIDATES_FAILED, _all_failed(outcome)
    if all(a.error is not None and a.error.code is ErrorCode.INVALID_STRUCTURED_OUTPUT for a in attempts):
        return ErrorCode.INVALID_STRUCTURED_OUTPUT, "no answer matched the requested response_format: " + "; ".join(
            a.error.message for a in attempts if a.error is not None)
    if outcome.stopped:
        return last.code, f"{attempts[-1].spec.name}: {last.message}"
    if len({a.spec.name for a in attempts}) == 1 and not outcome.skipped:
        return last.code, f"{attempts[0].spec.name}: {last.message}"
    return ErrorCode.ALL_CANDIDATES_FAILED, _with_last(_all_failed(outcome), last)


def _all_failed(outcome: CallOutcome) -> str:
    """Every attempt's error class and every candidate passed over, in order."""
    return "; ".join(
        [f"{a.spec.name}: {a.error.code.value}" for a in outcome.attempts if a.error]
        + [f"{s.model}: {s.reason.value} ({s.detail})" for s in outcome.skipped]
    )


def _with_last(message: str, last: ProviderError | None) -> str:
    return message if last is None else f"{message} (last error: {last.message})"


def usage_events(
    request: CompletionRequest, plan: RoutePlan, outcome: CallOutcome, *, final: bool = True
) -> list[UsageEvent]:
    """One event per attempt; a call to any model but the first one tried is a fallback.

    `final`: this round's last attempt is the one whose result became the reply."""
    events = []
    skipped = [f"{s.model}:{s.reason.value}" for s in every_skip(plan, outcome)]
    requested = request.model or (plan.candidates[0].spec.name if plan.candidates else "")
    primary = outcome.attempts[0].spec.name if outcome.attempts else None
    for a in outcome.attempts:
        prompt, completion, estimated = a.billed_tokens
        details = a.billed_usage
        events.append(
            UsageEvent(
                event_id=a.event_id,
                request_id=request.request_id,
                tenant=request.tenant,
                task_type=request.task_type,
                requested_model=requested,
                model=a.spec.name,
                provider=a.provider,
                deployment=a.deployment,
                status=AttemptOutcome.OK if a.ok else AttemptOutcome.ERROR,
                error_code=None if a.ok else a.error.code,  # type: ignore[union-attr]
                http_status=200 if a.ok else (a.error.status or 0),  # type: ignore[union-attr]
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=details.cache_read_tokens,
                reasoning_tokens=details.reasoning_tokens,
                cache_write_tokens=details.cache_write_tokens,
                audio_input_tokens=details.audio_input_tokens,
                audio_output_tokens=details.audio_output_tokens,
                image_input_tokens=details.image_input_tokens,
                total_tokens=prompt + completion,
                cost_usd=a.cost_usd,
                latency_ms=round(a.latency_ms, 3),
                ttft_ms=round(a.response.ttft_ms, 3) if a.response else 0.0,
                kind=request.kind,
                streamed=request.stream,
                cache_hit=a.cache_hit,
                shared_cache_hit=a.shared_cache_hit,
                tokens_estimated=estimated,
                attempt=a.number,
                is_fallback=a.spec.name != primary,
                is_final=final and a is outcome.attempts[-1],
                route_skipped=skipped,
                budget_downgrade=outcome.budget_downgrade,
                ts=a.started_at,
                attributes=_billing_attributes(a),
            )
        )
    return events


def _billing_attributes(attempt: AttemptResult) -> dict[str, str]:
    """What a call was billed by besides tokens: a rerank's search units (its cost is units x price);
    none for the tenant's own cache hit, which is free."""
    units = attempt.response.usage.search_units if attempt.response is not None else 0
    if not units or (attempt.cache_hit and not attempt.cost_usd):
        return {}
    return {"search_units": str(units)}
