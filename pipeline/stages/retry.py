"""What to do after a failed attempt: retry the model, fall back to the next, or stop (no I/O).

Each error class has its own policy (catalog `resilience.retry`): transient ones retry with
exponential backoff and full jitter (Retry-After wins for 429s); a context-window error falls
back to a larger-context model; a content-policy refusal falls back or is returned, as
configured; auth errors and an exhausted quota are not retried (another provider may still
answer); a timeout falls back at once unless `retry_timeouts`; a bad request stops. A stream
that broke after chunks went out is decided like any other failure: the next attempt is a new
stream (the caller is told to discard the partial one), never a continuation of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from pipeline.catalog.resilience import ContentPolicyAction, Resilience
from pipeline.contracts.models import ErrorCode
from pipeline.transport.provider import ProviderError

#: Failures that say something about the deployment (and count towards its cooldown), as
#: opposed to the request (context too long, content policy, bad request).
DEPLOYMENT_FAULTS = frozenset({
    ErrorCode.RATE_LIMITED, ErrorCode.SERVER_ERROR, ErrorCode.CONNECTION_ERROR, ErrorCode.TIMEOUT,
    ErrorCode.MALFORMED_RESPONSE, ErrorCode.AUTH_ERROR, ErrorCode.PROVIDER_ERROR, ErrorCode.QUOTA_EXCEEDED,
    ErrorCode.STREAM_INTERRUPTED,
})


class Action(StrEnum):
    RETRY = "retry"
    FALLBACK = "fallback"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What follows one failed attempt, and after how long. (Not `simulator.faults.Decision`,
    which is the fault the provider simulator injects into a call.)"""

    action: Action
    delay_s: float = 0.0


def backoff_delay(retry_number: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(n-1))] (AWS architecture blog's recommendation)."""
    return rng.uniform(0.0, min(max_s, base_s * 2 ** max(0, retry_number - 1)))


def decide(error: ProviderError, retries_so_far: int, policy: Resilience, rng: random.Random) -> RetryDecision:
    """`retries_so_far`: retries already made on this model for this error class."""
    code = error.code
    if code is ErrorCode.BAD_REQUEST:
        return RetryDecision(Action.STOP)
    if code is ErrorCode.TIMEOUT and not policy.retry_timeouts:
        return RetryDecision(Action.FALLBACK)  # a silent deployment: do not wait on it twice
    if code is ErrorCode.INVALID_STRUCTURED_OUTPUT:  # once more on the same model, then the next one
        return RetryDecision(Action.RETRY if retries_so_far < 1 else Action.FALLBACK)
    if code is ErrorCode.CONTENT_POLICY:
        return RetryDecision(Action.STOP if policy.content_policy is ContentPolicyAction.RETURN else Action.FALLBACK)
    if code in (ErrorCode.CONTEXT_WINDOW_EXCEEDED, ErrorCode.AUTH_ERROR, ErrorCode.QUOTA_EXCEEDED,
                ErrorCode.PROVIDER_ERROR):
        return RetryDecision(Action.FALLBACK)
    rule = policy.rule(code.value)
    if retries_so_far >= rule.retries:
        return RetryDecision(Action.FALLBACK)
    if code is ErrorCode.RATE_LIMITED and error.retry_after_s is not None:
        return RetryDecision(Action.RETRY, error.retry_after_s)  # the provider's word beats our backoff cap
    return RetryDecision(Action.RETRY, backoff_delay(retries_so_far + 1, rule.base_delay_s, rule.max_delay_s, rng))
