"""Undecodable stream events dropped below LiteLLM, and counted.

A provider stream that carries one event that is not JSON among good ones should still give the
whole answer. LiteLLM does not see to that: its OpenAI path raises mid-stream, and its Anthropic
parser takes the bad event for a fragment and buffers what follows, so the answer ends early
and looks complete. So streamed calls go through an HTTP transport that passes every complete
SSE event (or NDJSON line) whose data decodes, drops the ones that do not, and counts them for
the call that is running (`counting()`), before any SDK parses the bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx

_SSE_BOUNDARY = re.compile(rb"\r?\n\r?\n")


@dataclass(slots=True)
class SkippedEvents:
    count: int = 0


_current: contextvars.ContextVar[SkippedEvents | None] = contextvars.ContextVar("skipped_events", default=None)


@contextlib.contextmanager
def counting() -> Iterator[SkippedEvents]:
    """Events dropped by streams opened inside this block (in this task) are counted here."""
    skipped = SkippedEvents()
    token = _current.set(skipped)
    try:
        yield skipped
    finally:
        _current.reset(token)


def _decodes(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True


def sse_event_decodes(event: bytes) -> bool:
    """An SSE event is kept unless its data is neither JSON nor OpenAI's `[DONE]`."""
    data = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    if not data:
        return True  # a comment, a ping, an event line alone: not ours to judge
    payload = b"\n".join(data).strip()
    return payload == b"[DONE]" or _decodes(payload)


def ndjson_line_decodes(line: bytes) -> bool:
    return not line.strip() or _decodes(line)


class _FilteredStream(httpx.AsyncByteStream):
    """Whole events through, undecodable ones out; a trailing partial event passes unchanged, so
    a cut stream still looks cut to the parser above."""

    def __init__(self, upstream: httpx.AsyncByteStream, sse: bool, skipped: SkippedEvents | None) -> None:
        self._upstream = upstream
        self._sse = sse
        self._skipped = skipped

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        async for piece in self._upstream:
            buffer += piece
            kept, buffer = self._split(buffer)
            if kept:
                yield kept
        if buffer:
            yield buffer

    def _split(self, buffer: bytes) -> tuple[bytes, bytes]:
        kept: list[bytes] = []
        while True:
            if self._sse:
                match = _SSE_BOUNDARY.search(buffer)
                if match is None:
                    break
                event, sep, buffer = buffer[:match.start()], buffer[match.start():match.end()], buffer[match.end():]
                ok = sse_event_decodes(event)
            else:
                end = buffer.find(b"\n")
                if end < 0:
                    break
                event, sep, buffer = buffer[:end], b"\n", buffer[end + 1:]
                ok = ndjson_line_decodes(event)
            if ok:
                kept.append(event + sep)
            elif self._skipped is not None:
                self._skipped.count += 1
        return b"".join(kept), buffer

    async def aclose(self) -> None:
        await self._upstream.aclose()


class EventFilteringTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; only `text/event-stream` and NDJSON responses are touched."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        kind = response.headers.get("content-type", "")
        if "text/event-stream" not in kind and "ndjson" not in kind:
            return response
        if not isinstance(response.stream, httpx.AsyncByteStream):
            return response
        filtered = _FilteredStream(response.stream, "text/event-stream" in kind, _current.get())
        return httpx.Response(response.status_code, headers=response.headers, stream=filtered,
                              extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()
