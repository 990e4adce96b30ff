"""What the call stage produces: one result per provider call, and the round's outcome (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.catalog import ModelSpec
from pipeline.contracts.models import SkipReason
from pipeline.stages.budget import BudgetRefusal
from pipeline.stages.route import Skipped
from pipeline.transport.provider import ProviderError, ProviderResponse, TokenUsage


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One provider call: what was called, how it went, what it cost."""

    event_id: str
    number: int
    spec: ModelSpec
    started_at: datetime
    latency_ms: float
    deployment: str = ""
    response: ProviderResponse | None = None  # also set when the answer was refused (invalid JSON)
    error: ProviderError | None = None
    cost_usd: float = 0.0
    parsed: Any = None  # response_format json: the validated answer
    cache_hit: bool = False
    shared_cache_hit: bool = False  # the cached answer came from another tenant's call (booked at its cost)
    deployment_provider: str = ""  # the provider of the deployment called (a model's deployments may differ)

    @property
    def provider(self) -> str:
        """Who served this attempt: its deployment's provider; a cache hit (no call) names the model's."""
        return self.deployment_provider or self.spec.provider

    @property
    def ok(self) -> bool:
        return self.response is not None and self.error is None

    @property
    def billed_usage(self) -> TokenUsage:
        """What the provider bills for this call by token class (see `billed_tokens`)."""
        if self.response is not None:
            return self.response.usage
        partial = self.error.partial if self.error is not None else None
        return partial.usage if partial is not None else TokenUsage()

    @property
    def billed_tokens(self) -> tuple[int, int, bool]:
        """(prompt, completion, estimated): what the provider bills for this call, an answer or a
        stream that broke part way (its delivered tokens)."""
        if self.response is not None:
            return self.response.prompt_tokens, self.response.completion_tokens, self.response.tokens_estimated
        partial = self.error.partial if self.error is not None else None
        if partial is None:
            return 0, 0, False
        return partial.prompt_tokens, partial.completion_tokens, partial.estimated


@dataclass(frozen=True, slots=True)
class PassedOver:
    """A conditional fallback not tried: no failure of its kind came before it in the chain."""

    model: str
    detail: str


@dataclass(slots=True)
class CallOutcome:
    attempts: list[AttemptResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # passed over at call time
    passed_over: list[PassedOver] = field(default_factory=list)  # conditional fallbacks their failure never called
    budget_refusal: BudgetRefusal | None = None
    deadline_exceeded: bool = False
    stopped: bool = False  # a request-level error ended the chain

    @property
    def answer(self) -> AttemptResult | None:
        return self.attempts[-1] if self.attempts and self.attempts[-1].ok else None

    @property
    def budget_downgrade(self) -> bool:
        return any(s.reason is SkipReason.BUDGET_EXCEEDED for s in self.skipped)
