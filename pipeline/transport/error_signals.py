"""Classify a failed provider call by the provider's own signal (no I/O, no vendor import).

A client library's exception class is one reading of a failure, and it changes between
versions (LiteLLM 1.110 raises a plain BadRequestError for OpenAI's `content_policy_violation`,
which 1.106 raised as ContentPolicyViolationError). The provider's own words do not change: the
HTTP status, the error body's `code` / `type` / `status`, its message, and the headers. So
`classify_signal` reads those first; the library's class is the fallback for what carries no
body at all (timeouts, refused connections).

Bodies understood: OpenAI and Azure OpenAI (`{"error": {"code", "type", "message",
"innererror"}}`), Anthropic (`{"type": "error", "error": {"type", "message"}}`), Google
(`{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}`), Ollama and vLLM
(`{"error": "text"}`), and any of those already unwrapped to the inner object.

A call the client library refused before sending anything (`before_network`: it could not
translate the messages into the provider's format) carries no signal at all: the provider never
saw it, so it is the request's fault (`bad_request`: no retry, no cooldown), whatever the
library labelled it (LiteLLM wraps such errors as APIConnectionError).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from pipeline.contracts.models import ErrorCode

#: Error `code` / `type` / `status` values, lower-cased, -> our class. Most specific providers'
#: words; generic ones (invalid_request_error, api_error) stand lower, in `_GENERIC_TOKENS`.
_TOKENS: dict[str, ErrorCode] = {
    # Context window.
    "context_length_exceeded": ErrorCode.CONTEXT_WINDOW_EXCEEDED,
    "context_window_exceeded": ErrorCode.CONTEXT_WINDOW_EXCEEDED,
    "string_above_max_length": ErrorCode.CONTEXT_WINDOW_EXCEEDED,
    # Content policy (OpenAI; Azure's content filter and its inner code).
    "content_policy_violation": ErrorCode.CONTENT_POLICY,
    "content_filter": ErrorCode.CONTENT_POLICY,
    "responsibleaipolicyviolation": ErrorCode.CONTENT_POLICY,
    # Quota or billing: no point retrying the same account; fall back at once.
    "insufficient_quota": ErrorCode.QUOTA_EXCEEDED,
    "billing_hard_limit_reached": ErrorCode.QUOTA_EXCEEDED,
    "billing_not_active": ErrorCode.QUOTA_EXCEEDED,
    "quota_exceeded": ErrorCode.QUOTA_EXCEEDED,
    # Rate limits (OpenAI's rate-limit `type` is the limited resource: requests / tokens).
    "rate_limit_exceeded": ErrorCode.RATE_LIMITED,
    "rate_limit_error": ErrorCode.RATE_LIMITED,
    "resource_exhausted": ErrorCode.RATE_LIMITED,
    "too_many_requests": ErrorCode.RATE_LIMITED,
    "429": ErrorCode.RATE_LIMITED,
    # The provider is overloaded or failing: retry with backoff, then fall back.
    "overloaded_error": ErrorCode.SERVER_ERROR,
    "server_error": ErrorCode.SERVER_ERROR,
    "internal_error": ErrorCode.SERVER_ERROR,
    "service_unavailable": ErrorCode.SERVER_ERROR,
    "unavailable": ErrorCode.SERVER_ERROR,
    # Credentials.
    "invalid_api_key": ErrorCode.AUTH_ERROR,
    "authentication_error": ErrorCode.AUTH_ERROR,
    "permission_error": ErrorCode.AUTH_ERROR,
    "permission_denied": ErrorCode.AUTH_ERROR,
    "unauthenticated": ErrorCode.AUTH_ERROR,
    "invalid_authentication": ErrorCode.AUTH_ERROR,
    # The request itself.
    "model_not_found": ErrorCode.BAD_REQUEST,
    "not_found_error": ErrorCode.BAD_REQUEST,
    "request_too_large": ErrorCode.BAD_REQUEST,
}
_GENERIC_TOKENS: dict[str, ErrorCode] = {
    "invalid_request_error": ErrorCode.BAD_REQUEST,
    "invalid_argument": ErrorCode.BAD_REQUEST,
    "api_error": ErrorCode.SERVER_ERROR,
}

#: Message phrases providers use where the body has no specific code (Anthropic's context and
#: billing errors are `invalid_request_error`; Ollama and vLLM send text only). Checked in order.
_PHRASES: tuple[tuple[re.Pattern[str], ErrorCode], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), code) for pattern, code in (
        (r"insufficient_quota|exceeded your current quota|credit balance is too low|billing hard limit",
         ErrorCode.QUOTA_EXCEEDED),
        (r"context_length_exceeded|maximum context length|context window|context size|context length"
         r"|prompt is too long|input is too long|too many tokens|reduce the length of|maximum number of tokens",
         ErrorCode.CONTEXT_WINDOW_EXCEEDED),
        (r"content_policy_violation|content management policy|content filter|content_filter|safety system"
         r"|responsibleaipolicyviolation", ErrorCode.CONTENT_POLICY),
        (r"overloaded", ErrorCode.SERVER_ERROR),
    )
)

_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.AUTH_ERROR,
    402: ErrorCode.QUOTA_EXCEEDED,  # Payment Required
    403: ErrorCode.AUTH_ERROR,
    404: ErrorCode.BAD_REQUEST,
    408: ErrorCode.TIMEOUT,
    409: ErrorCode.SERVER_ERROR,  # OpenAI: a conflicting concurrent update; safe to retry
    413: ErrorCode.BAD_REQUEST,
    422: ErrorCode.BAD_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    504: ErrorCode.TIMEOUT,
    529: ErrorCode.SERVER_ERROR,  # Anthropic: overloaded
}


#: When a body names several classes (Azure: `content_filter` with an inner
#: `ResponsibleAIPolicyViolation`; Google: code 429 with status RESOURCE_EXHAUSTED), this order wins.
_ORDER = (
    ErrorCode.QUOTA_EXCEEDED, ErrorCode.CONTEXT_WINDOW_EXCEEDED, ErrorCode.CONTENT_POLICY, ErrorCode.AUTH_ERROR,
    ErrorCode.RATE_LIMITED, ErrorCode.BAD_REQUEST, ErrorCode.SERVER_ERROR,
)


@dataclass(frozen=True, slots=True)
class ProviderSignal:
    """What the provider itself said about a failed call; every part may be missing."""

    status: int | None = None
    body: Any = None  # the decoded error body (dict or text), as sent or as a client kept it
    message: str = ""  # the client library's message, which often embeds the body
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The library rejected the request before any network I/O: nothing above is the provider's.
    before_network: bool = False


def classify_signal(signal: ProviderSignal, library_guess: ErrorCode | None = None) -> ErrorCode:
    """Our error class for a failed call, from the provider's words and the library's guess.

    Precedence, strongest first:
    1. a specific body `code` / `type` / `status` (OpenAI sends 429 for both a rate limit and an
       exhausted quota, and 400 for a content-policy refusal: the body tells them apart);
    2. a specific phrase of the provider's message (Anthropic's context-length and billing errors
       are a generic `invalid_request_error`; Ollama and vLLM send text only);
    3. the library's guess, when it is specific (a timeout or a refused connection has no body,
       and a library may know phrases we do not);
    4. the HTTP status; 5. a generic body type; 6. the library's generic guess.

    A request refused `before_network` is a bad request unless the library found a request-side
    class itself (a context-window or key check before sending); its message is the library's,
    never the provider's, so no body or phrase in it is read.
    """
    if signal.before_network:
        return library_guess if library_guess in _LOCAL_VERDICTS else ErrorCode.BAD_REQUEST
    tokens = set(_body_tokens(signal.body)) | set(_body_tokens(embedded_json(signal.message)))
    specific = {_TOKENS[token] for token in tokens if token in _TOKENS}
    if specific:
        return next(code for code in _ORDER if code in specific)
    text = " ".join(filter(None, (_body_text(signal.body), signal.message)))
    for pattern, code in _PHRASES:
        if pattern.search(text):
            return code
    if library_guess is not None and library_guess not in _GENERIC_GUESSES:
        return library_guess
    if (from_status := _status_class(signal.status)) is not None:
        return from_status
    generic = {_GENERIC_TOKENS[token] for token in tokens if token in _GENERIC_TOKENS}
    return next((code for code in _ORDER if code in generic), library_guess or ErrorCode.PROVIDER_ERROR)


#: Library guesses that say only "the provider refused" or "something failed".
_GENERIC_GUESSES = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.PROVIDER_ERROR})
#: What a library may rightly decide about a request without sending it; anything else it says
#: then (a connection error, a server error) is a mislabel of its own failure to build the request.
_LOCAL_VERDICTS = frozenset({
    ErrorCode.BAD_REQUEST, ErrorCode.CONTEXT_WINDOW_EXCEEDED, ErrorCode.CONTENT_POLICY, ErrorCode.AUTH_ERROR,
})


def _status_class(status: int | None) -> ErrorCode | None:
    if status is None:
        return None
    if status in _STATUS:
        return _STATUS[status]
    if 500 <= status <= 599:
        return ErrorCode.SERVER_ERROR
    if 400 <= status <= 499:
        return ErrorCode.BAD_REQUEST
    return None


def _body_tokens(body: Any) -> Iterable[str]:
    """The lower-cased `code`, `type` and `status` values anywhere in an error body."""
    if isinstance(body, Mapping):
        for key in ("code", "type", "status"):
            value = body.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                yield str(value).strip().lower()
        for key in ("error", "innererror", "inner_error"):
            yield from _body_tokens(body.get(key))
        details = body.get("details")
        if isinstance(details, list):
            for detail in details:
                yield from _body_tokens(detail)


def _body_text(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, str):
            return inner
        parts = [body.get("message"), _body_text(inner) if isinstance(inner, Mapping) else None]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


_DECODER = json.JSONDecoder()


def embedded_json(text: str) -> Any:
    """The first JSON object in `text` that looks like an error body, or None.

    Client libraries often keep the provider's body only inside their message
    ("AnthropicException - {"type":"error",...}")."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict) and ("error" in value or "type" in value or "code" in value):
            return value
        start = text.find("{", start + 1)
    return None


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def retry_after_s(headers: Mapping[str, str], *, now_s: float | None = None) -> float | None:
    """When the provider says to come back, in seconds; None when it does not say.

    `retry-after-ms` (OpenAI, Azure), `retry-after` in seconds or as an HTTP date, and for
    OpenAI's 429s the reset of whichever limit ran out (`x-ratelimit-reset-requests: 6m0s`)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if (ms := _number(lower.get("retry-after-ms"))) is not None:
        return ms / 1000
    value = lower.get("retry-after")
    if value is not None:
        if (seconds := _number(value)) is not None:
            return seconds
        if now_s is not None:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now_s)
            except (TypeError, ValueError, IndexError):
                pass
    exhausted = [reset for kind in ("requests", "tokens")
                 if lower.get(f"x-ratelimit-remaining-{kind}") == "0"
                 and (reset := _duration(lower.get(f"x-ratelimit-reset-{kind}"))) is not None]
    return max(exhausted) if exhausted else None


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 and number == number else None


def _duration(value: str | None) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s"."""
    if not value:
        return None
    if (plain := _number(value)) is not None:
        return plain
    match = _DURATION.match(value.strip())
    if match is None or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000
