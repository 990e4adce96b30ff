"""The stream filter below LiteLLM: whole events through, undecodable ones dropped and counted."""

from __future__ import annotations

import httpx
import pytest

from pipeline.transport.stream_filter import EventFilteringTransport, counting, ndjson_line_decodes, sse_event_decodes


def test_which_events_are_kept() -> None:
    assert sse_event_decodes(b'data: {"a": 1}')
    assert sse_event_decodes(b"data: [DONE]")
    assert sse_event_decodes(b'event: content_block_delta\ndata: {"type": "x"}')
    assert sse_event_decodes(b": keep-alive comment") and sse_event_decodes(b"event: ping")
    assert not sse_event_decodes(b'data: {"choices": [{"delta": ')
    assert ndjson_line_decodes(b'{"done": false}') and ndjson_line_decodes(b"  ")
    assert not ndjson_line_decodes(b'{"message": {"content')


def transport(body: list[bytes], content_type: str) -> EventFilteringTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, stream=Pieces(body))

    return EventFilteringTransport(httpx.MockTransport(answer))


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


async def read(body: list[bytes], content_type: str) -> tuple[bytes, int]:
    with counting() as skipped:
        async with httpx.AsyncClient(transport=transport(body, content_type)) as client:
            response = await client.get("http://provider.test/stream")
            data = await response.aread()
    return data, skipped.count


@pytest.mark.parametrize("separator", [b"\n\n", b"\r\n\r\n"])
async def test_sse_events_split_across_reads_pass_whole_and_a_bad_one_is_dropped(separator: bytes) -> None:
    good1, bad, good2 = b'data: {"n": 1}', b'data: {"n": ', b'data: {"n": 2}'
    stream = separator.join([good1, bad, good2, b"data: [DONE]"]) + separator
    pieces = [stream[i:i + 7] for i in range(0, len(stream), 7)]  # events cut anywhere
    data, skipped = await read(pieces, "text/event-stream; charset=utf-8")
    assert data == separator.join([good1, good2, b"data: [DONE]"]) + separator and skipped == 1


async def test_ndjson_lines_and_a_cut_tail_passes_unchanged() -> None:
    data, skipped = await read([b'{"a": 1}\n{"b"', b': 2}\n{broken\n{"c": 3'], "application/x-ndjson")
    assert data == b'{"a": 1}\n{"b": 2}\n{"c": 3' and skipped == 1  # the partial last line is not judged


async def test_other_responses_are_untouched() -> None:
    data, skipped = await read([b"{not json at all"], "application/json")
    assert data == b"{not json at all" and skipped == 0
