"""How a simulated reply goes on the wire: error-fault replies, JSON bodies and streamed frames.

Holds the HTTP side of fault injection, apart from the endpoints that decide what to answer:
an error fault answers in the API's own error shape before any stream starts (so a caller can
still fall back), ``stream_cut`` announces a full body and drops the connection half way, and
the stream faults cut, pause, corrupt or leave a stream unterminated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from pipeline.simulator import azure, rerank, stream, wire
from pipeline.simulator.control import json_response
from pipeline.simulator.faults import STREAM_FAULTS, Decision

#: Sleeps ``delay_ms``, then hangs up to ``hang_s`` seconds (cut short when the server stops).
Wait = Callable[[float, float], Awaitable[None]]


def error_reply(
    api: str, model: str, decision: Decision, prompt_tokens: int, *, api_version: str = ""
) -> web.Response | None:
    """The reply for an error fault (or malformed), or ``None`` when the request gets a 200 reply
    (in the API's own error shape; ``api_version``: Azure's, which its texts quote)."""
    fault, rule = decision.fault, decision.rule
    if fault == "malformed":
        return web.Response(body=wire.MALFORMED_BODY, content_type="application/json")
    if fault in (None, "timeout", "stream_cut", "invalid_json") or fault in STREAM_FAULTS or rule is None:
        return None
    retry, code = rule.retry_after_s, rule.status
    if api == "azure":
        status, payload, headers = azure.error_response(
            fault, model, prompt_tokens=prompt_tokens, api_version=api_version, retry_after_s=retry, status=code)
    elif api == "cohere":
        status, payload, headers = rerank.error_response(
            fault, model, prompt_tokens=prompt_tokens, retry_after_s=retry, status=code)
    else:
        status, payload, headers = wire.error_response(
            api, fault, model, prompt_tokens=prompt_tokens, retry_after_s=retry, status=code)
    return json_response(payload, status=status, headers=headers)


async def send_json(request: web.Request, payload: object, seq: int, *, cut: bool) -> web.StreamResponse:
    """A JSON reply; ``cut`` announces the full length, sends half the bytes and drops the connection."""
    data = orjson.dumps(payload)
    if not cut:
        return web.Response(body=data, content_type="application/json", headers={"x-request-id": f"sim-{seq}"})
    response = web.StreamResponse(headers={"x-request-id": f"sim-{seq}"})
    response.content_type = "application/json"
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    return drop(request, response)


async def send_stream(
    request: web.Request, frames: stream.Frames, seq: int, *, fault: str | None, hang_s: float,
    chunk_delay_ms: Callable[[], float], wait: Wait,
) -> web.StreamResponse:
    """Write the frames (chunked), pausing ``chunk_delay_ms()`` between them (read per frame: the
    ``stream_chunk_delay_ms`` a runtime change sets applies at once); the stream faults (see
    ``faults``) cut, pause, corrupt or leave the stream unterminated."""
    response = web.StreamResponse(headers={"x-request-id": f"sim-{seq}", "cache-control": "no-cache"})
    response.content_type = frames.media_type
    await response.prepare(request)
    sent = {"stream_cut": frames.cut, "stream_malformed_chunk": frames.with_malformed,
            "stream_no_done": frames.without_terminator}.get(fault or "", frames.complete)()
    pause_at = {"stream_stall": len(frames.head) + frames.half,
                "slow_first_token": len(frames.head)}.get(fault or "")
    for index, frame in enumerate(sent):
        delay_ms = chunk_delay_ms()
        if index and delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if index == pause_at:
            await wait(0, hang_s)
        await response.write(frame)
    if fault == "stream_cut":
        return drop(request, response)
    if fault == "stream_no_done":
        await wait(0, hang_s)  # the connection stays open, the terminator never comes
    await response.write_eof()
    return response


def drop(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the socket after flushing what was written: no terminating chunk, a truncated body.

    aiohttp's ``write_eof`` then fails with a ``ConnectionError``, which it treats as
    a client disconnect (nothing logged, nothing more sent).
    """
    response.force_close()
    if request.transport is not None:
        request.transport.close()
    return response
