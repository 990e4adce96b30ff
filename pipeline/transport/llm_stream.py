"""One streamed provider call through LiteLLM, within our own time limits.

Deltas go to the sink as they arrive; the full response is rebuilt from the chunks at the end.
The HTTP client's timeout only bounds each socket read, so the limits that matter to a caller
are kept here: the first token within `first_token_timeout_s`, no silence between chunks longer
than `idle_timeout_s`, the whole attempt within its timeout. A stream whose answer is complete
(a finish reason came) but whose terminator never does is finished after a short grace.

Undecodable events are dropped below LiteLLM and counted (`stream_filter`), so one bad event
does not cost the answer. A stream is only an answer if it finished: one that broke, stalled or just stopped without a
finish reason is an error (`after_output` once deltas went out), with the tokens it generated
(`PartialUsage`: the provider's count if it sent one, else LiteLLM's tokenizer on the delivered
text, flagged as estimated), because the provider bills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from pipeline.contracts.models import ErrorCode
from pipeline.observability.metrics import STREAM_EVENTS_SKIPPED
from pipeline.transport.llm import classify, parse_response, token_usage
from pipeline.transport.model_info import count_message_tokens, count_text_tokens
from pipeline.transport.provider import DeltaSink, Endpoint, PartialUsage, ProviderError, ProviderResponse, StreamLimits
from pipeline.transport.stream_filter import counting

#: After the finish reason, how long to wait for the usage chunk and the terminator.
TAIL_GRACE_S = 1.0


class _Progress:
    """What a stream has produced so far (the state behind the limits and the partial usage)."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.texts: list[str] = []
        self.delivered = 0
        self.ttft_ms = 0.0
        self.finished = False  # a finish reason came: the answer is complete
        self.usage: Any = None

    def add(self, chunk: Any) -> str | None:
        self.chunks.append(chunk)
        usage = getattr(chunk, "usage", None)
        if usage is not None and getattr(usage, "completion_tokens", None) is not None:
            self.usage = usage
        choices = getattr(chunk, "choices", None) or []
        if choices and getattr(choices[0], "finish_reason", None):
            self.finished = True
        delta = getattr(getattr(choices[0], "delta", None), "content", None) if choices else None
        return delta or None


def _next_wait(progress: _Progress, limits: StreamLimits, deadline: float) -> tuple[float, str]:
    """How long the next chunk may take, and what it is called if it takes longer."""
    if progress.finished:
        wait, what = min(TAIL_GRACE_S, limits.idle_timeout_s), "tail"
    elif progress.delivered:
        wait, what = limits.idle_timeout_s, "idle"
    else:
        wait, what = limits.first_token_timeout_s, "first_token"
    left = deadline - time.monotonic()
    return (left, "attempt") if left < wait else (wait, what)


def partial_usage(progress: _Progress, model: str, messages: list[dict[str, Any]]) -> PartialUsage:
    """The provider's count if one came, else LiteLLM's tokenizer on what was delivered."""
    usage = progress.usage
    if usage is not None:
        details = token_usage(usage)
        return PartialUsage(details.prompt_tokens, details.completion_tokens, estimated=False, details=details)
    completion = count_text_tokens(model, ["".join(progress.texts)]) if progress.texts else 0
    return PartialUsage(count_message_tokens(model, messages), completion, estimated=True)


async def _close(stream: Any) -> None:
    """Release the connection of a stream we stop reading (best effort, bounded)."""
    close = getattr(stream, "aclose", None) or getattr(getattr(stream, "completion_stream", None), "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await close()


async def stream_completion(
    acompletion: Callable[..., Awaitable[Any]], spec: Endpoint, kwargs: dict[str, Any], on_delta: DeltaSink,
    secrets: tuple[str, ...], limits: StreamLimits, timeout_s: float,
) -> ProviderResponse:
    """Errors of `on_delta` itself (publishing) propagate unchanged: they are not the provider's."""
    with counting() as skipped:
        try:
            response = await _stream(acompletion, spec, kwargs, on_delta, secrets, limits, timeout_s)
        finally:
            if skipped.count:
                STREAM_EVENTS_SKIPPED.labels(spec.name).inc(skipped.count)
    return replace(response, skipped_events=skipped.count)


async def _stream(
    acompletion: Callable[..., Awaitable[Any]], spec: Endpoint, kwargs: dict[str, Any], on_delta: DeltaSink,
    secrets: tuple[str, ...], limits: StreamLimits, timeout_s: float,
) -> ProviderResponse:
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    stream = await _open(acompletion, spec, kwargs, secrets, min(timeout_s, limits.first_token_timeout_s))
    progress = _Progress()
    iterator = stream.__aiter__()
    try:
        await _read(iterator, progress, _StreamCall(spec, kwargs, secrets, limits, deadline), on_delta, t0)
    finally:
        await _close(stream)
    return _assemble(progress, spec, kwargs)


async def _open(
    acompletion: Callable[..., Awaitable[Any]], spec: Endpoint, kwargs: dict[str, Any], secrets: tuple[str, ...],
    within_s: float,
) -> Any:
    """Start the streamed call within the first token's limit (it bounds LiteLLM's setup and the connection too)."""
    try:
        async with asyncio.timeout(within_s):
            return await acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
    except TimeoutError:
        raise ProviderError(ErrorCode.TIMEOUT, f"{spec.name}: no answer within {within_s:g} s") from None
    except Exception as exc:
        raise classify(exc, secrets) from None


@dataclass(frozen=True, slots=True)
class _StreamCall:
    """One stream's call and the limits it is read within (what a broken stream's error needs)."""

    spec: Endpoint
    kwargs: dict[str, Any]
    secrets: tuple[str, ...]
    limits: StreamLimits
    deadline: float  # time.monotonic() by which the whole attempt ends


async def _read(iterator: Any, progress: _Progress, call: _StreamCall, on_delta: DeltaSink, t0: float) -> None:
    """Chunks into `progress`, each text delta to the sink as it comes, until the stream ends or
    the answer is complete with its usage (there is no need to wait on the terminator then)."""
    while (chunk := await _next_chunk(iterator, progress, call)) is not _END:
        delta = progress.add(chunk)
        if delta:
            if not progress.delivered:
                progress.ttft_ms = (time.perf_counter() - t0) * 1000
            progress.texts.append(delta)
            await on_delta(delta)
            progress.delivered += 1
        if progress.finished and progress.usage is not None:
            return


#: What `_next_chunk` returns when the stream is over.
_END = object()


async def _next_chunk(iterator: Any, progress: _Progress, call: _StreamCall) -> Any:
    """The next chunk within the limit that applies now, or `_END`; a timeout or a failure is an error,
    except a missing terminator after the finish reason."""
    wait, limit = _next_wait(progress, call.limits, call.deadline)
    try:
        async with asyncio.timeout(max(wait, 0.0)):
            return await iterator.__anext__()
    except StopAsyncIteration:
        return _END
    except TimeoutError:
        if progress.finished:
            return _END  # the answer is complete; its terminator (or usage) never came
        raise _broken(progress, call.spec, call.kwargs, ErrorCode.TIMEOUT, _timeout_text(limit, wait)) from None
    except Exception as exc:
        error = classify(exc, call.secrets)
        if not progress.delivered:
            raise error from None
        raise _broken(progress, call.spec, call.kwargs, ErrorCode.STREAM_INTERRUPTED, error.message,
                      status=error.status) from None


def _assemble(progress: _Progress, spec: Endpoint, kwargs: dict[str, Any]) -> ProviderResponse:
    """The response rebuilt from the chunks of a stream that finished, its token counts marked as
    estimates when the provider sent none."""
    import litellm

    if not progress.finished:
        raise _broken(progress, spec, kwargs, ErrorCode.STREAM_INTERRUPTED, "the stream ended without a finish reason")
    try:
        built = litellm.stream_chunk_builder(progress.chunks, messages=kwargs["messages"])
    except Exception as exc:
        raise _broken(progress, spec, kwargs, ErrorCode.MALFORMED_RESPONSE, f"unusable stream: {exc}") from None
    if built is None:
        raise ProviderError(ErrorCode.MALFORMED_RESPONSE, f"{spec.name}: the stream carried no chunks")
    response = replace(parse_response(built, spec), streamed_chunks=progress.delivered, ttft_ms=progress.ttft_ms)
    if progress.usage is None:  # the chunk builder invents counts when none came: say they are estimates
        counted = partial_usage(progress, spec.litellm_model, kwargs["messages"])
        response = replace(response, prompt_tokens=counted.prompt_tokens, completion_tokens=counted.completion_tokens,
                           tokens_estimated=True)
    return response


def _timeout_text(limit: str, wait: float) -> str:
    return {"first_token": f"no first token within {wait:g} s (first_token_timeout_s)",
            "idle": f"the stream stalled: no chunk for {wait:g} s (stream_idle_timeout_s)",
            }.get(limit, "the attempt's timeout ran out mid-stream")


def _broken(progress: _Progress, spec: Endpoint, kwargs: dict[str, Any], code: ErrorCode, why: str,
            *, status: int | None = None) -> ProviderError:
    delivered = progress.delivered
    return ProviderError(
        code, f"{spec.name}: {why}" + (f" (after {delivered} chunk(s))" if delivered else ""),
        status=status, after_output=delivered > 0,
        # Tokens are billed once generation started; a call that never produced any is free.
        partial=partial_usage(progress, spec.litellm_model, kwargs["messages"])
        if delivered or progress.usage is not None else None,
    )
