"""Call stage: try the route's candidates in order until one answers (the fallback chain)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.catalog import ModelSpec
from pipeline.contracts import CompletionRequest, ErrorCode
from pipeline.stages.cost import call_cost
from pipeline.stages.route import RoutePlan
from pipeline.transport.llm import ProviderClient, ProviderError, ProviderResponse

#: Errors that say "this request cannot succeed anywhere"; falling back would waste money.
_FINAL_FOR_REQUEST = frozenset({ErrorCode.BAD_REQUEST})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One provider call: what was called, how it went, what it cost."""

    event_id: str
    number: int
    spec: ModelSpec
    started_at: datetime
    latency_ms: float
    response: ProviderResponse | None = None
    error: ProviderError | None = None
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.response is not None


@dataclass(slots=True)
class CallOutcome:
    attempts: list[AttemptResult] = field(default_factory=list)

    @property
    def answer(self) -> AttemptResult | None:
        return self.attempts[-1] if self.attempts and self.attempts[-1].ok else None


async def call_with_fallback(
    request: CompletionRequest, plan: RoutePlan, provider: ProviderClient, *, timeout_s: float,
    first_attempt: int = 1,
) -> CallOutcome:
    """One attempt per candidate, in order; stop at the first answer or a request-level error."""
    outcome = CallOutcome()
    for number, spec in enumerate(plan.candidates, start=first_attempt):
        event_id = str(uuid.uuid4())  # minted before the call: the usage row's dedup key
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            response = await provider.complete(spec, request, timeout_s=timeout_s)
        except ProviderError as error:
            latency = (time.perf_counter() - t0) * 1000
            outcome.attempts.append(AttemptResult(event_id, number, spec, started_at, latency, error=error))
            if error.code in _FINAL_FOR_REQUEST:
                break
            continue
        latency = (time.perf_counter() - t0) * 1000
        cost = call_cost(spec, response.prompt_tokens, response.completion_tokens)
        outcome.attempts.append(
            AttemptResult(event_id, number, spec, started_at, latency, response=response, cost_usd=cost)
        )
        break
    return outcome
