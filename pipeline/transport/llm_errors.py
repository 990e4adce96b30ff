"""LiteLLM's exceptions as our error classes: one `ProviderError` per failed call, its key redacted.

The provider's own signal decides the class (`error_signals.classify_signal` reads it, with no
vendor import); this module digs that signal out of a LiteLLM exception and its causes, maps
LiteLLM's exception classes as the fallback, and tells a request LiteLLM refused while building
it (before anything was sent) from one the network or the provider failed.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pipeline.contracts.models import ErrorCode
from pipeline.transport.error_signals import ProviderSignal, classify_signal, retry_after_s
from pipeline.transport.provider import ProviderError


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


def _exception_chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    chain = [exc]
    while len(chain) < limit and (cause := chain[-1].__cause__ or chain[-1].__context__) is not None:
        if any(cause is seen for seen in chain):
            break
        chain.append(cause)
    return chain


def provider_signal(exc: BaseException) -> ProviderSignal:
    """What the provider said, as far as a LiteLLM exception kept it.

    Where LiteLLM keeps it varies by provider and version: the OpenAI SDK's parsed `body` (on
    the exception or a cause), the raw response, or only the message text ("AnthropicException
    - {...}"), which `classify_signal` searches for an embedded body."""
    chain = _exception_chain(exc, limit=6)  # the exception and its causes: LiteLLM wraps the provider's error
    # LiteLLM's own status_code is its mapping (Anthropic's 529 becomes 500); a cause keeps the one sent.
    status = next((s for e in chain[1:] + chain[:1]
                   if isinstance(s := getattr(e, "status_code", None), int) and not isinstance(s, bool)), None)
    body: Any = next((b for e in chain if isinstance(b := getattr(e, "body", None), dict | str) and b), None)
    response = getattr(exc, "response", None)
    if body is None and response is not None:
        try:
            text = response.text
            body = json.loads(text) if text else None
        except Exception:  # a synthetic or unread response: the message still carries the words
            body = None
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(response, "headers", None)
    return ProviderSignal(
        status=status,
        body=body,
        message=str(exc),
        headers={str(k): str(v) for k, v in headers.items()} if headers is not None else {},
    )


#: Packages whose exceptions or stack frames mean the network was involved: the HTTP clients
#: LiteLLM and the provider SDKs send with, and the socket layer under them.
_NETWORK_PACKAGES = frozenset({
    "httpx", "httpcore", "h11", "h2", "aiohttp", "aiohappyeyeballs", "anyio", "ssl", "socket", "requests",
    "urllib3", "openai", "anthropic",
})
#: LiteLLM's own modules that send or receive (as opposed to building the request).
_NETWORK_MODULES = ("litellm.llms.custom_httpx.http_handler", "litellm.llms.custom_httpx.aiohttp_",
                    "litellm.llms.custom_httpx.httpx_handler", "litellm.litellm_core_utils.streaming_handler")
#: LiteLLM's request-building steps: its provider configs' `transform_request` (a method of every
#: chat config), the message validation `completion()` runs first, and the prompt templates
#: (`litellm_core_utils.prompt_templates`) that turn OpenAI messages into a provider's format.
_REQUEST_STEP = re.compile(r"^(async_)?transform_request$|^_?transform_messages$|^validate\w*messages\w*$")
_REQUEST_MODULES = ("litellm.litellm_core_utils.prompt_templates.",)
#: ... and the steps that handle a provider's answer (or its HTTP error).
_RESPONSE_STEP = re.compile(r"transform_response|_handle_error|stream|chunk|^__a?(iter|next)__$")


def _frame_phase(module: str, function: str) -> str | None:
    """"network", "request" (LiteLLM building the request) or None (neither says anything)."""
    if module.partition(".")[0] in _NETWORK_PACKAGES or module.startswith(_NETWORK_MODULES):
        return "network"
    if module.partition(".")[0] != "litellm":
        return None  # the stdlib (json, asyncio), our own code: neither side of the wire
    if _RESPONSE_STEP.search(function):
        return "network"
    if module.startswith(_REQUEST_MODULES) or _REQUEST_STEP.search(function):
        return "request"
    return None


def rejected_before_sending(exc: BaseException) -> bool:
    """Whether LiteLLM raised `exc` while building the request, before sending anything.

    LiteLLM translates OpenAI messages into each provider's format before sending; a message it
    cannot translate (an unknown content part, a tool call without `function`, arguments that
    are not JSON) fails there with a KeyError, TypeError, ValueError or plain Exception, which
    its exception mapping then labels APIConnectionError, as if the network had failed. The
    proof that it did not: no exception in the chain is a network error, and the stacks show
    LiteLLM building the request (`transform_request`, message validation, a prompt template)
    and never sending it or reading an answer (an HTTP client, `transform_response`, a stream).
    A body that fails to parse (JSONDecodeError in `transform_response`) or a refused
    connection therefore keep their class."""
    chain = _exception_chain(exc)
    if any(isinstance(e, OSError) or type(e).__module__.partition(".")[0] in _NETWORK_PACKAGES for e in chain):
        return False  # OSError: refused, reset, DNS (gaierror), TLS, TimeoutError
    building = False
    for e in chain:
        tb = e.__traceback__
        while tb is not None:
            phase = _frame_phase(str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_frame.f_code.co_name)
            if phase == "network":
                return False
            building = building or phase == "request"
            tb = tb.tb_next
    return building


def _rejection_detail(exc: BaseException) -> str:
    """What LiteLLM's own errors under the label said ("Exception: Invalid user message at index
    0 ...; KeyError: 'function'"), without the traceback LiteLLM appends to its message."""
    def first_line(e: BaseException) -> str:
        text = str(e).strip()
        return text.splitlines()[0][:300] if text else ""

    causes = _exception_chain(exc)[1:]
    if not causes:
        return first_line(exc)
    parts: list[str] = []
    for e in reversed(causes):  # innermost first, so a repeated message keeps its original type
        line = first_line(e)
        if line and not any(line in part for part in parts):
            parts.append(f"{type(e).__name__}: {line}")
    return "; ".join(reversed(parts))


def _unsupported_params(exc: BaseException) -> str | None:
    """LiteLLM's refusal of a parameter the provider lacks (raised before sending), told as what to
    do about it in our terms (its own advice names its global switch and its proxy), or None."""
    import litellm

    if not isinstance(exc, litellm.UnsupportedParamsError):
        return None
    said = str(exc).removeprefix("litellm.UnsupportedParamsError: ").split(" To drop these", 1)[0].strip()
    return (f"{said.rstrip('.')}; leave the parameter out, or set drop_params: true on the model in models.yaml "
            "to have unsupported parameters dropped")


def classify(exc: BaseException, secrets: tuple[str, ...] = ()) -> ProviderError:
    """Turn any exception from a provider call into a ProviderError.

    The provider's own signal (body code/type, message, status) decides; LiteLLM's exception
    class is the fallback, so a LiteLLM release that re-labels an error cannot change its class.
    A request LiteLLM refused before sending anything has no provider signal: `bad_request`."""
    if isinstance(exc, ProviderError):
        return exc
    unsupported = _unsupported_params(exc)
    if unsupported is not None:  # a request-level problem, never retried: the same call fails the same way
        return ProviderError(ErrorCode.BAD_REQUEST, redact(unsupported, secrets)[:1000], status=400)
    guess = next((mapped for cls, mapped in _exception_table() if isinstance(exc, cls)), None)
    if rejected_before_sending(exc):
        code = classify_signal(ProviderSignal(message=str(exc), before_network=True), guess)
        message = redact(f"request rejected by LiteLLM before sending (raised as {type(exc).__name__}): "
                         f"{_rejection_detail(exc)}", secrets)[:1000]
        return ProviderError(code, message)
    signal = provider_signal(exc)
    code = classify_signal(signal, guess)
    message = redact(f"{type(exc).__name__}: {exc}", secrets)[:1000]
    return ProviderError(
        code, message, status=signal.status, retry_after_s=retry_after_s(signal.headers, now_s=time.time())
    )
