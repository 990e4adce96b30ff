"""Call stage: try the eligible candidates in order until one answers (the fallback chain).

Before each call the estimated cost is reserved against every budget the request draws on; a
candidate the budgets cannot cover is skipped for the next (cheaper) one, a `budget_downgrade`.
After the call the reservation is settled to the actual cost (0 when the call failed).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pipeline.catalog import ModelSpec
from pipeline.contracts import CompletionRequest, ErrorCode, SkipReason
from pipeline.stages.budget import BudgetRefusal, Reservation
from pipeline.stages.cost import call_cost
from pipeline.stages.route import Candidate, RoutePlan, Skipped
from pipeline.transport.llm import ProviderClient, ProviderError, ProviderResponse

#: Errors that say "this request cannot succeed anywhere"; falling back would waste money.
_FINAL_FOR_REQUEST = frozenset({ErrorCode.BAD_REQUEST})


class SpendControl(Protocol):
    async def reserve(self, candidate: Candidate) -> Reservation | BudgetRefusal: ...
    async def settle(self, reservation: Reservation, actual_usd: float) -> None: ...


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
    skipped: list[Skipped] = field(default_factory=list)  # passed over at call time (budgets)
    budget_refusal: BudgetRefusal | None = None

    @property
    def answer(self) -> AttemptResult | None:
        return self.attempts[-1] if self.attempts and self.attempts[-1].ok else None

    @property
    def budget_downgrade(self) -> bool:
        return any(s.reason is SkipReason.BUDGET_EXCEEDED for s in self.skipped)


async def call_with_fallback(
    request: CompletionRequest,
    plan: RoutePlan,
    provider: ProviderClient,
    *,
    timeout_s: float,
    first_attempt: int = 1,
    spend: SpendControl | None = None,
) -> CallOutcome:
    """One attempt per candidate, in order; stop at the first answer or a request-level error."""
    outcome = CallOutcome()
    number = first_attempt
    for candidate in plan.candidates:
        reservation = None
        if spend is not None:
            reserved = await spend.reserve(candidate)
            if isinstance(reserved, BudgetRefusal):
                outcome.skipped.append(Skipped(candidate.spec.name, SkipReason.BUDGET_EXCEEDED, reserved.line.name))
                outcome.budget_refusal = outcome.budget_refusal or reserved
                continue
            reservation = reserved
        result = await _attempt(request, candidate.spec, provider, number, timeout_s, spend, reservation)
        outcome.attempts.append(result)
        number += 1
        if result.ok or (result.error is not None and result.error.code in _FINAL_FOR_REQUEST):
            break
    return outcome


async def _attempt(
    request: CompletionRequest, spec: ModelSpec, provider: ProviderClient, number: int, timeout_s: float,
    spend: SpendControl | None, reservation: Reservation | None,
) -> AttemptResult:
    event_id = str(uuid.uuid4())  # minted before the call: the usage row's dedup key
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    cost = 0.0
    try:
        response = await provider.complete(spec, request, timeout_s=timeout_s)
        cost = call_cost(spec, response.prompt_tokens, response.completion_tokens)
        return AttemptResult(event_id, number, spec, started_at, (time.perf_counter() - t0) * 1000,
                             response=response, cost_usd=cost)
    except ProviderError as error:
        return AttemptResult(event_id, number, spec, started_at, (time.perf_counter() - t0) * 1000, error=error)
    finally:  # settle even when cancelled, so a reservation never leaks
        if spend is not None and reservation is not None:
            await spend.settle(reservation, cost)
