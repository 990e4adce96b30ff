"""Call stage: the eligible candidates in order, with retries per error class, until one answers.

For each candidate the deployment pool picks a deployment (skipping those cooling down or at
their RPM/TPM limit); the estimated cost is reserved against every budget the request draws on
(a candidate the budgets cannot cover is skipped for the next, cheaper one: a budget downgrade);
the call runs with the per-attempt timeout, cut to the request's deadline; the reservation is
settled to the actual cost. `stages/retry.py` decides what follows a failure. No attempt starts
after the deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from pipeline.catalog import ModelSpec
from pipeline.catalog.resilience import Deployment
from pipeline.contracts.models import CompletionRequest, ErrorCode, SkipReason
from pipeline.observability import tracing
from pipeline.stages.attempts import AttemptResult, CallOutcome, PassedOver
from pipeline.stages.budget import BudgetRefusal, Reservation
from pipeline.stages.cost import usage_cost
from pipeline.stages.deployments import DeploymentPool, Unavailable
from pipeline.stages.retry import Action, decide
from pipeline.stages.route import CONTEXT_WINDOW_FAILURES, Candidate, Failure, RoutePlan, Skipped
from pipeline.stages.structured import check_answer
from pipeline.transport.provider import ProviderClient, ProviderError, ProviderResponse, StreamLimits


class StreamSink(Protocol):
    """Where a streamed request's deltas go: (catalog model name, text delta)."""

    async def __call__(self, model: str, delta: str) -> None: ...

    async def restart(self) -> None:
        """The deltas so far belong to a failed attempt: what follows is a new stream."""
        ...


class SpendControl(Protocol):
    async def reserve(self, candidate: Candidate) -> Reservation | BudgetRefusal: ...
    async def settle(self, reservation: Reservation, actual_usd: float) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached answer; `other_tenant`: produced by another tenant's call (response cache scope `shared`)."""

    response: ProviderResponse
    other_tenant: bool = False


class AnswerCache(Protocol):
    """Exact-match answers by model and normalised request (the worker's response cache)."""

    async def get(self, model: str, request: CompletionRequest) -> CacheHit | None: ...
    async def put(self, model: str, request: CompletionRequest, response: ProviderResponse) -> None: ...


@dataclass(slots=True)
class CallContext:
    provider: ProviderClient
    default_timeout_s: float
    pool: DeploymentPool | None = None
    spend: SpendControl | None = None
    deadline: float | None = None  # epoch seconds
    rng: random.Random = field(default_factory=random.Random)
    on_delta: StreamSink | None = None  # streaming requests: where text deltas go
    cache: AnswerCache | None = None  # answers a request unless it opted out (`cache: false`)

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()


async def call_with_fallback(
    request: CompletionRequest, plan: RoutePlan, ctx: CallContext, *, first_attempt: int = 1
) -> CallOutcome:
    """The candidates in order until one answers, a request-level error stops the chain, or the
    deadline passes; a cached answer ends it at no cost."""
    chain = _Chain(CallOutcome(), first_attempt)
    for candidate in plan.candidates:
        if not chain.reached(candidate) or chain.needs_larger_context(candidate):
            continue
        hit = await _cached(request, candidate, chain.number, ctx)
        if hit is not None:
            chain.outcome.attempts.append(hit)
            return chain.outcome
        if await _try_candidate(request, candidate, ctx, chain):
            return chain.outcome
    return chain.outcome


@dataclass(slots=True)
class _Chain:
    """What one round of the fallback chain carries from candidate to candidate."""

    outcome: CallOutcome
    number: int  # the next attempt's number
    failed_context_window: int = 0  # after a context-window error only larger-context models may serve

    def needs_larger_context(self, candidate: Candidate) -> bool:
        """Skip (and record) a model whose context window is no larger than one that already proved too small.
        A context-window fallback whose window is unknown is tried: it was configured for this failure."""
        spec = candidate.spec
        if not self.failed_context_window or (spec.context_window or 0) > self.failed_context_window:
            return False
        if spec.context_window is None and candidate.only_after & CONTEXT_WINDOW_FAILURES:
            return False
        self.outcome.skipped.append(Skipped(spec.name, SkipReason.LARGER_CONTEXT_NEEDED,
                                            f"context window {spec.context_window} <= {self.failed_context_window}"))
        return True

    def failures(self) -> frozenset[Failure]:
        """Every failure so far in this round: the call-time skips and the attempts' error codes."""
        return frozenset({*(s.reason for s in self.outcome.skipped),
                          *(a.error.code for a in self.outcome.attempts if a.error is not None)})

    def reached(self, candidate: Candidate) -> bool:
        """A conditional fallback is tried only after a failure of its kind; else it is passed over (and recorded)."""
        if candidate.triggered(self.failures()):
            return True
        kinds = ", ".join(sorted(candidate.only_after))
        self.outcome.passed_over.append(PassedOver(candidate.spec.name, f"tried only after {kinds}"))
        return False

    def fell_back(self, error: ProviderError, spec: ModelSpec) -> None:
        if error.code.value == "context_window_exceeded":
            self.failed_context_window = max(self.failed_context_window, spec.context_window or 1)


async def _try_candidate(request: CompletionRequest, candidate: Candidate, ctx: CallContext, chain: _Chain) -> bool:
    """Attempts on one candidate, retried per error class. True when the chain ends here (an
    answer, a request-level error, the deadline); False to go on to the next candidate."""
    spec = candidate.spec
    outcome = chain.outcome
    retries: Counter[str] = Counter()
    while True:
        remaining = ctx.remaining_s()
        if remaining is not None and remaining <= 0:
            outcome.deadline_exceeded = True
            return True
        admitted = await _admit(ctx, candidate, outcome)
        if admitted is None:
            return False
        deployment, reservation = admitted
        result = await _attempt(request, candidate, deployment, chain.number, _timeout(spec, ctx, remaining), ctx,
                                reservation)
        outcome.attempts.append(result)
        chain.number += 1
        if result.ok:
            return True
        error = result.error
        assert error is not None
        if error.after_output and ctx.on_delta is not None:
            await ctx.on_delta.restart()  # whatever answers next is a new stream, never a continuation
        decision = decide(error, retries[error.code.value], spec.resilience, ctx.rng)
        retries[error.code.value] += 1
        if decision.action is Action.STOP:
            outcome.stopped = True
            return True
        if decision.action is Action.FALLBACK:
            chain.fell_back(error, spec)
            return False
        if not await _backoff(ctx, decision.delay_s):
            outcome.deadline_exceeded = True  # the backoff would end past the deadline
            return True


async def _admit(
    ctx: CallContext, candidate: Candidate, outcome: CallOutcome
) -> tuple[Deployment, Reservation | None] | None:
    """A deployment with capacity, and the call's estimated cost reserved against the budgets;
    None, with the reason in `outcome.skipped`, when the candidate cannot be called now."""
    spec = candidate.spec
    deployment = await _pick(ctx, candidate)
    if isinstance(deployment, Unavailable):
        outcome.skipped.append(Skipped(spec.name, deployment.reason, deployment.detail, deployment.wait_s))
        return None
    if ctx.spend is None:
        return deployment, None
    reserved = await ctx.spend.reserve(candidate)
    if isinstance(reserved, BudgetRefusal):
        outcome.skipped.append(Skipped(spec.name, SkipReason.BUDGET_EXCEEDED, reserved.line.name))
        outcome.budget_refusal = outcome.budget_refusal or reserved
        return None
    return deployment, reserved


def _timeout(spec: ModelSpec, ctx: CallContext, remaining: float | None) -> float:
    """The model's per-attempt timeout (else the worker's), cut to what is left of the deadline."""
    timeout = spec.resilience.timeout_s or ctx.default_timeout_s
    return timeout if remaining is None else min(timeout, remaining)


async def _backoff(ctx: CallContext, delay_s: float) -> bool:
    """Wait before a retry; False (without waiting) when the wait would end past the deadline."""
    remaining = ctx.remaining_s()
    if remaining is not None and delay_s >= remaining:
        return False
    await asyncio.sleep(delay_s)
    return True


async def _cached(
    request: CompletionRequest, candidate: Candidate, number: int, ctx: CallContext,
) -> AttemptResult | None:
    """A cache hit is an attempt with no deployment and no call. The tenant's own answer costs
    nothing; another tenant's (scope `shared`) costs what the call would have cost, reserved and
    settled on the budgets like a call (a budget that cannot cover it makes it a miss)."""
    if ctx.cache is None:
        return None
    hit = await ctx.cache.get(candidate.spec.name, request)
    if hit is None:
        return None
    response, cost = hit.response, 0.0
    if hit.other_tenant:
        cost = usage_cost(candidate.spec, response.usage)
        if ctx.spend is not None:
            reserved = await ctx.spend.reserve(candidate)
            if isinstance(reserved, BudgetRefusal):
                return None  # the chain goes on as without the cache, and the budget skips the candidate
            await ctx.spend.settle(reserved, cost)
    if ctx.on_delta is not None and response.content:
        await ctx.on_delta(candidate.spec.name, response.content)  # a streamed request gets it as one chunk
        response = replace(response, streamed_chunks=1, ttft_ms=0.0)
    check = check_answer(request.response_format, response)
    return AttemptResult(str(uuid.uuid4()), number, candidate.spec, datetime.now(UTC), 0.0, "", response,
                         cost_usd=cost, parsed=check.parsed, cache_hit=True, shared_cache_hit=hit.other_tenant)


async def _pick(ctx: CallContext, candidate: Candidate) -> Deployment | Unavailable:
    if ctx.pool is None:
        return candidate.spec.deployments[0]
    return await ctx.pool.pick(candidate.spec, candidate.prompt_tokens + candidate.completion_tokens)


async def _attempt(
    request: CompletionRequest, candidate: Candidate, deployment: Deployment, number: int, timeout_s: float,
    ctx: CallContext, reservation: Reservation | None,
) -> AttemptResult:
    spec = candidate.spec
    event_id = str(uuid.uuid4())  # minted before the call: the usage row's dedup key
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    cost, error, response, parsed = 0.0, None, None, None
    if ctx.pool is not None:
        ctx.pool.started(deployment)
    try:
        with tracing.attempt_span({"llm.model": spec.name, "llm.deployment": deployment.name,
                                   "llm.attempt": number, "llm.request_id": request.request_id}) as span:
            try:
                sink = partial(ctx.on_delta, spec.name) if ctx.on_delta is not None else None
                limits = StreamLimits(min(spec.resilience.first_token_timeout_s, timeout_s),
                                      min(spec.resilience.stream_idle_timeout_s, timeout_s)) if sink else None
                response = await ctx.provider.complete(deployment, request, timeout_s=timeout_s, on_delta=sink,
                                                       stream_limits=limits)
                cost = usage_cost(spec, response.usage, deployment.litellm_model)
                check = check_answer(request.response_format, response)  # every choice, when n > 1
                parsed = check.parsed
                if not check.ok:  # paid for, but unusable: an error of its own class
                    error = ProviderError(ErrorCode.INVALID_STRUCTURED_OUTPUT, f"{spec.name}: {check.problem}",
                                          after_output=response.streamed_chunks > 0)
            except ProviderError as exc:
                error = exc
                if exc.partial is not None:  # a stream that broke part way: its tokens are billed
                    cost = usage_cost(spec, exc.partial.usage, deployment.litellm_model)
            if error is not None and span is not None:
                span.set_attribute("llm.error_code", error.code.value)
    finally:  # settle and record even when cancelled, so neither a reservation nor a slot leaks
        latency = (time.perf_counter() - t0) * 1000
        bookkeeping: list[Awaitable[object]] = []  # independent round trips to shared state: run side by side
        if ctx.spend is not None and reservation is not None:
            bookkeeping.append(ctx.spend.settle(reservation, cost))
        if ctx.pool is not None:
            actual = (response.prompt_tokens + response.completion_tokens) if response else 0
            bookkeeping.append(ctx.pool.finished(deployment, spec.resilience, latency, error=error,
                                                 estimated_tokens=candidate.prompt_tokens + candidate.completion_tokens,
                                                 actual_tokens=actual))
        await asyncio.gather(*bookkeeping)
    if ctx.cache is not None and response is not None and error is None:
        await ctx.cache.put(spec.name, request, response)
    return AttemptResult(event_id, number, spec, started_at, latency, deployment.name, response, error, cost, parsed,
                         deployment_provider=deployment.provider)
