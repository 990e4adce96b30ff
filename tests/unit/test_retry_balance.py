"""Retry decisions per error class, full-jitter backoff, and deployment ordering (no I/O)."""

import random
from collections import Counter

import pytest

from pipeline.catalog.resilience import (
    Balancing,
    ContentPolicyAction,
    Deployment,
    Resilience,
    RetryRule,
)
from pipeline.contracts.models import ErrorCode
from pipeline.stages.balance import order_deployments
from pipeline.stages.retry import Action, backoff_delay, decide
from pipeline.transport.provider import ProviderError

POLICY = Resilience()
RNG = random.Random(1)


def err(code: ErrorCode, retry_after: float | None = None) -> ProviderError:
    return ProviderError(code, code.value, retry_after_s=retry_after)


def test_transient_errors_retry_then_fall_back() -> None:
    for code in (ErrorCode.SERVER_ERROR, ErrorCode.CONNECTION_ERROR):
        assert decide(err(code), 0, POLICY, RNG).action is Action.RETRY
        assert decide(err(code), 1, POLICY, RNG).action is Action.RETRY
        assert decide(err(code), 2, POLICY, RNG).action is Action.FALLBACK
    assert decide(err(ErrorCode.STREAM_INTERRUPTED), 0, POLICY, RNG).action is Action.RETRY  # a new stream
    assert decide(err(ErrorCode.STREAM_INTERRUPTED), 1, POLICY, RNG).action is Action.FALLBACK


def test_a_timeout_fails_over_at_once_and_cools_down_unless_timeouts_are_retried() -> None:
    assert decide(err(ErrorCode.TIMEOUT), 0, POLICY, RNG).action is Action.FALLBACK
    assert POLICY.cooldown_rule("timeout") == (1, POLICY.cooldown_s)
    retrying = POLICY.merged({"retry_timeouts": True})
    assert decide(err(ErrorCode.TIMEOUT), 0, retrying, RNG).action is Action.RETRY
    assert decide(err(ErrorCode.TIMEOUT), 1, retrying, RNG).action is Action.FALLBACK
    assert retrying.cooldown_rule("timeout") == (retrying.allowed_fails, retrying.cooldown_s)


def test_rate_limit_honours_retry_after() -> None:
    decision = decide(err(ErrorCode.RATE_LIMITED, retry_after=2.5), 0, POLICY, RNG)
    assert decision.action is Action.RETRY and decision.delay_s == 2.5
    assert 0 <= decide(err(ErrorCode.RATE_LIMITED), 0, POLICY, RNG).delay_s <= 1.0  # no header: backoff


def test_request_level_errors() -> None:
    assert decide(err(ErrorCode.BAD_REQUEST), 0, POLICY, RNG).action is Action.STOP
    assert decide(err(ErrorCode.AUTH_ERROR), 0, POLICY, RNG).action is Action.FALLBACK  # never retried
    assert decide(err(ErrorCode.CONTEXT_WINDOW_EXCEEDED), 0, POLICY, RNG).action is Action.FALLBACK
    assert decide(err(ErrorCode.CONTENT_POLICY), 0, POLICY, RNG).action is Action.FALLBACK
    returning = POLICY.merged({"content_policy": ContentPolicyAction.RETURN})
    assert decide(err(ErrorCode.CONTENT_POLICY), 0, returning, RNG).action is Action.STOP


def test_policy_is_configurable_per_class() -> None:
    policy = POLICY.merged({"retry": {"server_error": {"retries": 5, "base_delay_s": 0.01, "max_delay_s": 0.02}}})
    assert policy.rule("server_error") == RetryRule(retries=5, base_delay_s=0.01, max_delay_s=0.02)
    assert policy.rule("timeout") == POLICY.rule("timeout")  # other classes keep the defaults
    assert decide(err(ErrorCode.SERVER_ERROR), 4, policy, RNG).action is Action.RETRY


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
def test_full_jitter_stays_within_the_cap(n: int) -> None:
    rng = random.Random(n)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for _ in range(2000)]
    cap = min(8.0, 0.5 * 2 ** (n - 1))
    assert min(delays) >= 0 and max(delays) <= cap
    assert sum(delays) / len(delays) == pytest.approx(cap / 2, rel=0.1)  # uniform: mean is half the cap


def dep(name: str, weight: float = 1.0) -> Deployment:
    return Deployment(id=name, name=name, litellm_model="openai/gpt-4o-mini", weight=weight)


def test_weighted_split() -> None:
    rng = random.Random(3)
    deps = [dep("a", 3), dep("b", 1)]
    firsts = Counter(order_deployments(deps, Balancing.WEIGHTED, in_flight={}, latency_ms={}, rng=rng)[0].name
                     for _ in range(4000))
    assert firsts["a"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_least_busy_and_latency() -> None:
    deps = [dep("a"), dep("b"), dep("c")]
    busy = order_deployments(deps, Balancing.LEAST_BUSY, in_flight={"a": 5, "b": 1, "c": 3}, latency_ms={}, rng=RNG)
    assert [d.name for d in busy] == ["b", "c", "a"]
    fast = order_deployments(deps, Balancing.LATENCY, in_flight={}, latency_ms={"a": 90, "b": 300}, rng=RNG)
    assert [d.name for d in fast] == ["c", "a", "b"]  # c is untried: measured first
