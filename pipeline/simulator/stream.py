"""Streamed replies as wire frames: OpenAI and Anthropic SSE, Ollama NDJSON.

Pure builders, like ``wire``: a reply becomes ``Frames`` (head, content deltas,
tail), and the server only writes them, pausing between frames if configured.
Splitting keeps every character, so the deltas always add up to the
non-streamed content (or tool arguments) exactly. The ``stream_cut`` fault sends
``Frames.cut()``: the head and half of the deltas, never the tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.simulator import wire
from pipeline.simulator.reply import Reply
from pipeline.simulator.wire import JsonDict

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
OPENAI_DONE = b"data: [DONE]\n\n"
_WORD = re.compile(r"\s*\S+\s*")


def split_text(text: str, words_per_chunk: int) -> list[str]:
    """``text`` in pieces of ``words_per_chunk`` words, whitespace kept: ``"".join(...) == text``."""
    words = _WORD.findall(text)
    if not words:
        return [text] if text else []
    step = max(1, words_per_chunk)
    return ["".join(words[i : i + step]) for i in range(0, len(words), step)]


@dataclass(frozen=True)
class Frames:
    """One streamed reply: ``head`` opens it, ``body`` carries the deltas, ``tail`` finishes it."""

    media_type: str
    head: tuple[bytes, ...]
    body: tuple[bytes, ...]
    tail: tuple[bytes, ...]

    def complete(self) -> tuple[bytes, ...]:
        return self.head + self.body + self.tail

    def cut(self) -> tuple[bytes, ...]:
        """What ``stream_cut`` sends before dropping the connection: at least one delta, no tail."""
        return self.head + self.body[: self.half]

    @property
    def half(self) -> int:
        """Where a cut or a stall falls: after at least one delta."""
        return max(1, len(self.body) // 2)

    def with_malformed(self) -> tuple[bytes, ...]:
        """The complete stream with one undecodable event half way (after ``half`` deltas)."""
        bad = b"data: {\"choices\": [{\"delta\": \n\n" if self.media_type == SSE else b"{\"message\": {\"content\n"
        if self.media_type == SSE and self.head and self.head[0].startswith(b"event:"):
            bad = b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\n\n"
        return self.head + self.body[: self.half] + (bad,) + self.body[self.half:] + self.tail

    def without_terminator(self) -> tuple[bytes, ...]:
        """Everything but the frame that says the stream is over ([DONE], message_stop); Ollama's
        last line carries the counts and is kept (it has no separate terminator)."""
        tail = self.tail
        if tail and (tail[-1] == OPENAI_DONE or tail[-1].startswith(b"event: message_stop")):
            tail = tail[:-1]
        return self.head + self.body + tail


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _event(name: str, data: JsonDict) -> bytes:
    return b"event: " + name.encode() + b"\n" + _sse(data)


def _ndjson(data: JsonDict) -> bytes:
    return orjson.dumps(data) + b"\n"


def openai_frames(
    model: str, reply: Reply, pt: int, ct: int, *, seq: int, created: int, words: int, include_usage: bool,
    details: wire.UsageDetails = wire.NO_DETAILS,
) -> Frames:
    """``chat.completion.chunk`` events; with ``include_usage`` a last chunk with usage and no choices."""
    base = {"id": f"chatcmpl-sim-{seq}", "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_sim"}

    def chunk(delta: JsonDict, finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    call = reply.tool_call
    if call is not None:
        function = {"name": call.name, "arguments": ""}
        opening = {"index": 0, "id": call.openai_id, "type": "function", "function": function}
        head = (chunk({"role": "assistant", "content": None, "tool_calls": [opening]}),)
        body = tuple(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in split_text(call.arguments_json, words)
        )
        finish = "tool_calls"
    else:
        head = (chunk({"role": "assistant", "content": "", "refusal": None}),)
        body = tuple(chunk({"content": piece}) for piece in split_text(reply.content or "", words))
        finish = "stop"
    tail = [chunk({}, finish)]
    if include_usage:
        tail.append(_sse({**base, "choices": [], "usage": wire.openai_usage(pt, ct, details)}))
    tail.append(OPENAI_DONE)
    return Frames(SSE, head, body, tuple(tail))


def anthropic_frames(
    model: str, reply: Reply, pt: int, ct: int, *, seq: int, words: int, details: wire.UsageDetails = wire.NO_DETAILS,
) -> Frames:
    """Messages API events: message_start .. content_block_* .. message_delta, message_stop."""
    message: JsonDict = {"id": f"msg_sim_{seq}", "type": "message", "role": "assistant", "model": model, "content": [],
                         "stop_reason": None, "stop_sequence": None, "usage": wire.anthropic_usage(pt, 1, details)}
    call = reply.tool_call
    if call is not None:
        block: JsonDict = {"type": "tool_use", "id": call.anthropic_id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_text(call.arguments_json, words)]
        stop_reason = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_text(reply.content or "", words)]
        stop_reason = "end_turn"
    head = (
        _event("message_start", {"type": "message_start", "message": message}),
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        _event("ping", {"type": "ping"}),
    )
    body = tuple(
        _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas
    )
    tail = (
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                 "usage": {"output_tokens": ct}}),
        _event("message_stop", {"type": "message_stop"}),
    )
    return Frames(SSE, head, body, tail)


def ollama_frames(path: str, model: str, reply: Reply, pt: int, ct: int, *, words: int) -> Frames:
    """NDJSON lines with ``done: false`` deltas, then one ``done: true`` line with the counts.

    The last line carries no text: LiteLLM's ``/api/generate`` parser ignores text there.
    """
    final = wire.success_body("ollama", path, model, "", pt, ct, seq=0, created=0)
    if path.endswith("/generate"):
        body = tuple(
            _ndjson({"model": model, "created_at": wire.ollama_now(), "response": piece, "done": False})
            for piece in split_text(reply.content or "", words)
        )
        return Frames(NDJSON, (), body, (_ndjson(final),))
    if reply.tool_call is not None:  # Ollama sends a whole tool call in one line
        messages: list[JsonDict] = [
            {"role": "assistant", "content": "", "tool_calls": [wire.ollama_tool_call(reply.tool_call)]}
        ]
    else:
        messages = [{"role": "assistant", "content": p} for p in split_text(reply.content or "", words)]
    body = tuple(
        _ndjson({"model": model, "created_at": wire.ollama_now(), "message": m, "done": False}) for m in messages
    )
    return Frames(NDJSON, (), body, (_ndjson(final),))


def frames_for(
    api: str, path: str, model: str, reply: Reply, pt: int, ct: int, *, seq: int, created: int, words: int,
    include_usage: bool, details: wire.UsageDetails = wire.NO_DETAILS,
) -> Frames:
    """The streamed form of ``reply`` in ``api``'s wire format."""
    if api == "openai":
        return openai_frames(model, reply, pt, ct, seq=seq, created=created, words=words, include_usage=include_usage,
                             details=details)
    if api == "anthropic":
        return anthropic_frames(model, reply, pt, ct, seq=seq, words=words, details=details)
    return ollama_frames(path, model, reply, pt, ct, words=words)
