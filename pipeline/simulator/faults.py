"""Fault rules and the decision of which fault (if any) a request gets.

Kept free of I/O so the matching semantics (order, ``times`` budgets, seeded
``probability``) can be unit-tested without a server and replayed exactly.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Api = Literal["openai", "anthropic", "ollama", "azure", "cohere"]
FaultKind = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "malformed",
    "context_length",
    "auth",
    "bad_request",
    "content_policy",
    # The account's quota or credit is spent (OpenAI 429 insufficient_quota, Anthropic 400 "credit
    # balance is too low"), and the provider is overloaded (Anthropic 529 overloaded_error).
    "quota",
    "overloaded",
    # Not error replies: a 200 whose stream (or body) is dropped half way, and
    # structured output / tool arguments that do not conform to the schema.
    "stream_cut",
    "invalid_json",
    # Streams that misbehave after a 200 head (streamed requests only; others are answered
    # normally): a pause of ``hang_s`` half way (stall) or before the first delta
    # (slow_first_token), one undecodable event among complete ones (malformed chunk), and a
    # complete answer whose terminator never comes (no [DONE] / message_stop), the connection
    # held open for ``hang_s``.
    "stream_stall",
    "slow_first_token",
    "stream_malformed_chunk",
    "stream_no_done",
]
#: Faults that shape a streamed 200 reply (see above).
STREAM_FAULTS = frozenset({"stream_stall", "slow_first_token", "stream_malformed_chunk", "stream_no_done"})


class FaultRule(BaseModel):
    """One injected behaviour for requests whose model/API match.

    ``fault=None`` with ``latency_ms`` is a latency-only rule. ``times`` counts
    firings (a probability miss does not spend budget).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("*", description="fnmatch glob on the model name in the request body")
    api: Api | None = Field(None, description="restrict to one wire format; None = any")
    fault: FaultKind | None = None
    status: int = Field(500, ge=500, le=599, description="HTTP status for server_error")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After for rate_limit, sent as given")
    hang_s: float = Field(30.0, ge=0, description="how long a timeout (or stream stall) fault holds the response")
    times: int | None = Field(None, ge=0, description="fire for the first N matches; None = unlimited")
    probability: float = Field(1.0, ge=0.0, le=1.0)
    latency_ms: float = Field(0.0, ge=0, description="extra latency for matching requests")

    @model_validator(mode="after")
    def _check(self) -> FaultRule:
        if self.fault is None and self.latency_ms == 0:
            raise ValueError("a rule needs a fault or latency_ms > 0")
        return self

    def matches(self, model: str, api: str) -> bool:
        """Whether this rule applies to a request, ignoring budget and probability."""
        return (self.api is None or self.api == api) and fnmatchcase(model, self.model)


class Decision(BaseModel):
    """What the server should do with one request."""

    model_config = ConfigDict(frozen=True)

    fault: FaultKind | None = None
    rule_index: int | None = None
    rule: FaultRule | None = None
    extra_latency_ms: float = 0.0

    @property
    def outcome(self) -> str:
        """The request-log outcome label: ``"ok"`` or the fault name."""
        return self.fault or "ok"


NO_FAULT = Decision()


class FaultBook:
    """Ordered rules plus per-rule firing counters and a seeded RNG.

    Replacing or clearing rules resets counters and re-seeds the RNG, so a given
    rule set always yields the same sequence of decisions for the same traffic.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int = 0) -> None:
        self._seed = seed
        self._rules: list[FaultRule] = []
        self._fired: list[int] = []
        self._rng = random.Random(seed)
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        return tuple(self._rules)

    @property
    def fired(self) -> tuple[int, ...]:
        """How many times each rule has fired, index-aligned with ``rules``."""
        return tuple(self._fired)

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        self._rules = list(rules)
        self._fired = [0] * len(self._rules)
        self._rng = random.Random(self._seed)

    def add_rule(self, rule: FaultRule) -> None:
        """Append a rule; existing counters and the RNG stream are kept."""
        self._rules.append(rule)
        self._fired.append(0)

    def clear(self) -> None:
        self.set_rules(())

    def snapshot(self) -> list[dict[str, object]]:
        """Rules with their firing counts, for the control API."""
        return [
            {**rule.model_dump(mode="json"), "fired": fired}
            for rule, fired in zip(self._rules, self._fired, strict=True)
        ]

    def decide(self, model: str, api: str) -> Decision:
        """First matching rule with budget left that passes its probability roll wins."""
        for index, rule in enumerate(self._rules):
            if not rule.matches(model, api):
                continue
            if rule.times is not None and self._fired[index] >= rule.times:
                continue
            # Only roll when needed so adding a p=1 rule does not shift the stream.
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            self._fired[index] += 1
            return Decision(
                fault=rule.fault, rule_index=index, rule=rule, extra_latency_ms=rule.latency_ms
            )
        return NO_FAULT


class SimulatorConfig(BaseModel):
    """Server-wide behaviour; a value: runtime changes produce a validated copy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: float = Field(0.0, ge=0, description="base latency added to every provider request")
    latency_jitter_ms: float = Field(0.0, ge=0, description="uniform extra 0..jitter, seeded")
    completion_tokens: int = Field(16, ge=1, description="reported completion tokens (reply word count)")
    prompt_tokens: int | None = Field(None, ge=1, description="fixed prompt tokens; None = ceil(chars/4)")
    cached_tokens: int = Field(0, ge=0, description="of the prompt tokens, reported as cache reads (OpenAI "
                                                    "cached_tokens, Anthropic cache_read_input_tokens)")
    cache_write_tokens: int = Field(0, ge=0, description="of the prompt tokens, reported as written to the cache "
                                                         "(Anthropic cache_creation_input_tokens)")
    reasoning_tokens: int = Field(0, ge=0, description="of each choice's completion tokens, reported as reasoning "
                                                       "(OpenAI completion_tokens_details)")
    seed: int = 0
    rules: list[FaultRule] = Field(default_factory=list)
    request_log_size: int = Field(100_000, ge=1)
    stream_chunk_words: int = Field(2, ge=1, description="words per streamed delta (several chunks per reply)")
    stream_chunk_delay_ms: float = Field(0.0, ge=0, description="pause between streamed chunks")
    embedding_dimensions: int = Field(8, ge=1, le=65_536, description="vector size unless the request sets one")
    models: list[str] = Field(
        default_factory=lambda: ["gpt-4o-mini", "claude-3-5-haiku-20241022", "llama3.1"],
        description="advertised by /v1/models and /api/tags (any model name is served)",
    )
    api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="model glob -> sha256 hex digests of the keys it accepts (Authorization: Bearer, "
                    "x-api-key or Azure's api-key); a matching request with another key or none gets the "
                    "provider's 401. "
                    "Digests, so the simulator never holds or records a key.",
    )

    def key_check(self, model: str, key: str | None) -> str:
        """`unchecked` (no api_keys glob matches the model), `passed` or `rejected`."""
        accepted = [d for glob, digests in self.api_keys.items() if fnmatchcase(model, glob) for d in digests]
        if not accepted:
            return "unchecked"
        digest = hashlib.sha256(key.encode()).hexdigest() if key else ""
        return "passed" if digest in accepted else "rejected"


# Fields the control API may change at runtime (PATCH /_sim/config).
RUNTIME_FIELDS: frozenset[str] = frozenset(
    {
        "latency_ms", "latency_jitter_ms", "completion_tokens", "prompt_tokens",
        "cached_tokens", "cache_write_tokens", "reasoning_tokens",
        "stream_chunk_words", "stream_chunk_delay_ms", "embedding_dimensions", "api_keys",
    }
)
