"""The provider seam: one call to one catalog model through LiteLLM, with typed errors.

Everything LiteLLM-specific (model strings, exception classes, secrets) stays in this module;
the call stage sees only `ProviderClient`, `ProviderResponse` and `ProviderError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.catalog import ModelSpec
from pipeline.contracts import CompletionRequest, ErrorCode

#: Sent when a catalog entry names no key (Ollama, vLLM, the simulator): some client
#: libraries refuse to send a request without one. It is not a secret.
NO_KEY_PLACEHOLDER = "no-key-configured"


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    content: str | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class ProviderError(Exception):
    """A failed provider call, classified. `message` never contains a secret."""

    def __init__(
        self, code: ErrorCode, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class ProviderClient(Protocol):
    async def complete(self, spec: ModelSpec, request: CompletionRequest, *, timeout_s: float) -> ProviderResponse:
        """Call `spec` once. Raises ProviderError; never retries on its own."""
        ...


def _exception_table() -> list[tuple[type[BaseException], ErrorCode]]:
    """LiteLLM exception -> our error class; most specific first (several subclass others)."""
    import litellm

    return [
        (litellm.ContextWindowExceededError, ErrorCode.CONTEXT_WINDOW_EXCEEDED),
        (litellm.ContentPolicyViolationError, ErrorCode.CONTENT_POLICY),
        (litellm.RateLimitError, ErrorCode.RATE_LIMITED),
        (litellm.Timeout, ErrorCode.TIMEOUT),
        (litellm.AuthenticationError, ErrorCode.AUTH_ERROR),
        (litellm.PermissionDeniedError, ErrorCode.AUTH_ERROR),
        (litellm.APIResponseValidationError, ErrorCode.MALFORMED_RESPONSE),
        (litellm.InternalServerError, ErrorCode.SERVER_ERROR),
        (litellm.ServiceUnavailableError, ErrorCode.SERVER_ERROR),
        (litellm.BadGatewayError, ErrorCode.SERVER_ERROR),
        (litellm.NotFoundError, ErrorCode.BAD_REQUEST),
        (litellm.UnprocessableEntityError, ErrorCode.BAD_REQUEST),
        (litellm.BadRequestError, ErrorCode.BAD_REQUEST),
        (litellm.APIConnectionError, ErrorCode.CONNECTION_ERROR),
    ]


_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|x-api-key['\"]?\s*[:=]\s*\S+)", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known key values and key-shaped tokens from provider error text."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", text)


def _retry_after(exc: BaseException) -> float | None:
    """LiteLLM keeps the provider's response headers on `litellm_response_headers`."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: BaseException, secrets: tuple[str, ...] = ()) -> ProviderError:
    """Turn any exception from a provider call into a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    code = ErrorCode.PROVIDER_ERROR
    for cls, mapped in _exception_table():
        if isinstance(exc, cls):
            code = mapped
            break
    status = getattr(exc, "status_code", None)
    message = redact(f"{type(exc).__name__}: {exc}", secrets)[:1000]
    return ProviderError(code, message, status=status if isinstance(status, int) else None, retry_after_s=_retry_after(exc))


class LiteLLMProvider:
    """Calls providers through `litellm.acompletion`, one attempt per call (retries are ours)."""

    def __init__(self) -> None:
        import litellm  # imported here: it is slow, and the rest of the package must not pay for it

        litellm.suppress_debug_info = True
        litellm.drop_params = True  # a parameter one provider lacks must not fail a fallback
        self._acompletion = litellm.acompletion

    async def complete(self, spec: ModelSpec, request: CompletionRequest, *, timeout_s: float) -> ProviderResponse:
        key = spec.api_key()
        if spec.api_key_env and not key:
            raise ProviderError(
                ErrorCode.AUTH_ERROR, f"API key environment variable {spec.api_key_env} is not set for {spec.name}"
            )
        kwargs: dict[str, Any] = {
            "model": spec.litellm_model,
            "messages": [m.model_dump(exclude_none=True) for m in request.messages],
            "api_key": key or NO_KEY_PLACEHOLDER,
            "timeout": timeout_s,
            "max_retries": 0,
            "num_retries": 0,
            "extra_headers": {"x-pipeline-request-id": request.request_id},
        }
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            response = await self._acompletion(**kwargs)
        except Exception as exc:
            raise classify(exc, (key,) if key else ()) from None
        return _parse(response, spec)


def _parse(response: Any, spec: ModelSpec) -> ProviderResponse:
    try:
        choice = response.choices[0]
        usage = response.usage
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        return ProviderResponse(
            content=choice.message.content,
            prompt_tokens=int(usage.prompt_tokens or 0),
            completion_tokens=int(usage.completion_tokens or 0),
            finish_reason=choice.finish_reason,
            cached_tokens=int(getattr(prompt_details, "cached_tokens", 0) or 0),
            reasoning_tokens=int(getattr(completion_details, "reasoning_tokens", 0) or 0),
        )
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise ProviderError(ErrorCode.MALFORMED_RESPONSE, f"{spec.name}: unusable response: {exc}") from None
