"""Pure builders for each provider's wire format (request parsing, bodies, errors).

Everything here is a cheap function of its arguments so the server stays fast
and deterministic, and so the shapes can be checked against LiteLLM in one place.
Error texts are chosen to hit LiteLLM's exception mapping (see
``litellm/litellm_core_utils/exception_mapping_utils.py``).

Chat bodies carry either text or one tool call (``ToolCall``: OpenAI ``tool_calls``,
Anthropic ``tool_use`` block, Ollama ``message.tool_calls``); embedding bodies carry
deterministic unit vectors. What to answer is decided in ``reply``; streamed
shapes live in ``stream``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.simulator.faults import FaultKind

JsonDict = dict[str, Any]

# Served with 200 + application/json: looks like the start of a reply, never parses.
MALFORMED_BODY = b'{"id": "sim-malformed", "object": "chat.completion", "choices": [{"message": {"content": "tru'

ANTHROPIC_CONTEXT_LIMIT = 200_000
OPENAI_CONTEXT_LIMIT = 128_000


# --------------------------------------------------------------------------- requests


def text_of(content: object) -> str:
    """Flatten a message ``content`` (string, list of parts or blocks) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text_of(part) for part in content)
    if isinstance(content, dict):
        text = content.get("text", content.get("content", ""))
        return text_of(text)
    return ""


def prompt_texts(api: str, body: JsonDict) -> list[str]:
    """All prompt strings a request carries, in order (system first)."""
    texts: list[str] = []
    if api == "anthropic" and body.get("system"):
        texts.append(text_of(body["system"]))
    if api == "ollama" and "prompt" in body:  # /api/generate
        if body.get("system"):
            texts.append(text_of(body["system"]))
        texts.append(text_of(body.get("prompt", "")))
        return texts
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            texts.append(text_of(message.get("content")))
    return texts


def last_user_text(api: str, body: JsonDict) -> str:
    """The text the simulated reply quotes back: the last user turn (or the prompt)."""
    if api == "ollama" and "prompt" in body:
        return text_of(body.get("prompt", ""))
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def estimate_tokens(texts: list[str]) -> int:
    """~4 characters per token, at least 1: cheap, stable, close enough for cost tests."""
    return max(1, math.ceil(sum(len(t) for t in texts) / 4))


def reply_text(model: str, user_text: str, n_words: int, *, choice: int = 0) -> str:
    """A deterministic reply of exactly ``max(n_words, head)`` whitespace-separated words; choices
    after the first (OpenAI ``n``) say which they are (``sim reply #2 from ...``)."""
    number = f" #{choice + 1}" if choice else ""
    head = f"sim reply{number} from {model} to: {user_text[:40]}".split()
    pad = [f"w{i}" for i in range(max(0, n_words - len(head)))]
    return " ".join(head + pad)


# --------------------------------------------------------------------------- successes


@dataclass(frozen=True)
class ToolCall:
    """The one tool call a reply makes; ``seq`` makes the provider-style ids unique."""

    name: str
    arguments: dict[str, Any]
    seq: int = 0

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: one JSON string (spaced, so a stream splits it)."""
        return json.dumps(self.arguments, ensure_ascii=False)

    @property
    def openai_id(self) -> str:
        return f"call_sim_{self.seq}"

    @property
    def anthropic_id(self) -> str:
        return f"toolu_sim_{self.seq}"


def openai_tool_call(call: ToolCall) -> JsonDict:
    return {"id": call.openai_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}


def anthropic_tool_use(call: ToolCall) -> JsonDict:
    return {"type": "tool_use", "id": call.anthropic_id, "name": call.name, "input": call.arguments}


def ollama_tool_call(call: ToolCall) -> JsonDict:
    """Ollama sends arguments as an object, not a string, and no id."""
    return {"function": {"name": call.name, "arguments": call.arguments}}


#: One choice of a chat reply: its text, or its tool call.
Choice = tuple[str | None, ToolCall | None]


@dataclass(frozen=True, slots=True)
class UsageDetails:
    """The usage details a chat reply reports (``SimulatorConfig``'s ``cached_tokens``,
    ``cache_write_tokens``, ``reasoning_tokens``); none by default, so the plain shapes stay."""

    cache_read: int = 0  # of the prompt tokens: OpenAI cached_tokens, Anthropic cache_read_input_tokens
    cache_write: int = 0  # of the prompt tokens: Anthropic cache_creation_input_tokens (OpenAI reports none)
    reasoning: int = 0  # of each choice's completion tokens (OpenAI reasoning_tokens)


NO_DETAILS = UsageDetails()


def openai_usage(pt: int, ct: int, details: UsageDetails = NO_DETAILS, *, choices: int = 1) -> JsonDict:
    """OpenAI's ``usage``: the details are parts of ``prompt_tokens`` and ``completion_tokens``."""
    usage: JsonDict = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    if details.cache_read:
        usage["prompt_tokens_details"] = {"cached_tokens": min(details.cache_read, pt), "audio_tokens": 0}
    if details.reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": min(details.reasoning * choices, ct),
                                              "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}
    return usage


def anthropic_usage(pt: int, ct: int, details: UsageDetails = NO_DETAILS) -> JsonDict:
    """Anthropic's ``usage``: ``input_tokens`` excludes the cache reads and writes, reported beside it."""
    read = min(details.cache_read, pt)
    write = min(details.cache_write, pt - read)
    usage: JsonDict = {"input_tokens": pt - read - write, "output_tokens": ct}
    if read or write:
        usage.update(cache_creation_input_tokens=write, cache_read_input_tokens=read)
    return usage


def openai_logprobs(content: str | None, top: int) -> JsonDict:
    """OpenAI's ``logprobs`` of a choice: one entry per word of the text, with ``top`` alternatives."""
    def token(text: str, logprob: float) -> JsonDict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    words = (content or "").split(" ")
    return {"content": [{**token(w, -0.25), "top_logprobs": [token(w if k == 0 else f"{w}~{k}", -0.25 * (k + 1))
                                                               for k in range(top)]}
                        for w in words if w], "refusal": None}


def _openai_choice(index: int, content: str | None, tool_call: ToolCall | None, logprobs_top: int | None) -> JsonDict:
    message: JsonDict = {"role": "assistant", "content": content, "refusal": None}
    if tool_call is not None:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [openai_tool_call(tool_call)]}
    return {"index": index, "message": message,
            "logprobs": None if logprobs_top is None else openai_logprobs(content, logprobs_top),
            "finish_reason": "stop" if tool_call is None else "tool_calls"}


def openai_chat(
    model: str, content: str | None, prompt_tokens: int, completion_tokens: int, *, seq: int, created: int,
    tool_call: ToolCall | None = None, more: tuple[Choice, ...] = (), logprobs_top: int | None = None,
    details: UsageDetails = NO_DETAILS,
) -> JsonDict:
    """``more``: the choices after the first (a request with ``n`` > 1); ``completion_tokens`` covers all.
    ``logprobs_top``: the request asked for logprobs, with this many ``top_logprobs``."""
    return {
        "id": f"chatcmpl-sim-{seq}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_sim",
        "choices": [_openai_choice(i, c, t, logprobs_top) for i, (c, t) in enumerate(((content, tool_call), *more))],
        "usage": openai_usage(prompt_tokens, completion_tokens, details, choices=1 + len(more)),
    }


def anthropic_message(
    model: str, content: str | None, prompt_tokens: int, completion_tokens: int, *, seq: int,
    tool_call: ToolCall | None = None, details: UsageDetails = NO_DETAILS,
) -> JsonDict:
    block = {"type": "text", "text": content or ""} if tool_call is None else anthropic_tool_use(tool_call)
    return {
        "id": f"msg_sim_{seq}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": "end_turn" if tool_call is None else "tool_use",
        "stop_sequence": None,
        "usage": anthropic_usage(prompt_tokens, completion_tokens, details),
    }


def ollama_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ollama_common(model: str, prompt_tokens: int, completion_tokens: int) -> JsonDict:
    return {
        "model": model,
        "created_at": ollama_now(),
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_000_000,
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 500_000,
        "eval_count": completion_tokens,
        "eval_duration": 500_000,
    }


def ollama_generate(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> JsonDict:
    """Non-streaming ``/api/generate`` body (LiteLLM ``ollama/``)."""
    return {**_ollama_common(model, prompt_tokens, completion_tokens), "response": content, "context": []}


def ollama_chat(
    model: str, content: str | None, prompt_tokens: int, completion_tokens: int, *, tool_call: ToolCall | None = None
) -> JsonDict:
    """Non-streaming ``/api/chat`` body (LiteLLM ``ollama_chat/``)."""
    message: JsonDict = {"role": "assistant", "content": content or ""}
    if tool_call is not None:
        message["tool_calls"] = [ollama_tool_call(tool_call)]
    return {**_ollama_common(model, prompt_tokens, completion_tokens), "message": message}


def success_body(
    api: str, path: str, model: str, content: str | None, pt: int, ct: int, *, seq: int, created: int,
    tool_call: ToolCall | None = None, more: tuple[Choice, ...] = (), logprobs_top: int | None = None,
    details: UsageDetails = NO_DETAILS,
) -> JsonDict:
    """The success reply for ``api``; Ollama's shape depends on the endpoint path (Ollama reports no details).

    ``/api/generate`` has no tools, so a tool call there is never asked for. Only OpenAI's
    format carries several choices (``more``).
    """
    if api == "openai":
        return openai_chat(model, content, pt, ct, seq=seq, created=created, tool_call=tool_call, more=more,
                           logprobs_top=logprobs_top, details=details)
    if api == "anthropic":
        return anthropic_message(model, content, pt, ct, seq=seq, tool_call=tool_call, details=details)
    if path.endswith("/generate"):
        return ollama_generate(model, content or "", pt, ct)
    return ollama_chat(model, content, pt, ct, tool_call=tool_call)


def openai_models(models: list[str], created: int) -> JsonDict:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "simulator"} for m in models],
    }


def ollama_tags(models: list[str]) -> JsonDict:
    return {
        "models": [
            {"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 0, "digest": "sim",
             "details": {"format": "gguf", "family": "llama", "parameter_size": "8B"}}
            for m in models
        ]
    }


# --------------------------------------------------------------------------- embeddings


def embedding_inputs(body: JsonDict) -> list[str]:
    """The texts an embedding request carries: ``input`` (str or list) or legacy Ollama ``prompt``.

    Token-id inputs (OpenAI allows lists of ints) are embedded by their JSON text.
    """
    raw = body["input"] if "input" in body else body.get("prompt", "")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        if raw and all(isinstance(x, int) for x in raw):
            return [json.dumps(raw)]
        return [x if isinstance(x, str) else json.dumps(x) for x in raw]
    return [json.dumps(raw)]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text alone: same text, same vector, any model or call.

    A shorter vector is the normalised prefix of a longer one (like OpenAI's ``dimensions``).
    """
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _b64_floats(vector: list[float]) -> str:
    """OpenAI's ``encoding_format="base64"``: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def openai_embeddings(
    model: str, vectors: list[list[float]], prompt_tokens: int, *, encoding_format: str | None = None
) -> JsonDict:
    def encoded(vector: list[float]) -> list[float] | str:
        return _b64_floats(vector) if encoding_format == "base64" else vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def ollama_embed(model: str, vectors: list[list[float]], prompt_tokens: int) -> JsonDict:
    """``/api/embed`` (what LiteLLM ``ollama/`` embeddings call)."""
    return {"model": model, "embeddings": vectors, "total_duration": 1_000_000, "load_duration": 0,
            "prompt_eval_count": prompt_tokens}


def ollama_embeddings_legacy(vectors: list[list[float]]) -> JsonDict:
    """Legacy ``/api/embeddings``: one ``prompt`` in, one ``embedding`` out."""
    return {"embedding": vectors[0] if vectors else []}


# --------------------------------------------------------------------------- errors

_STATUS: dict[str, int] = {
    "rate_limit": 429,
    "context_length": 400,
    "auth": 401,
    "bad_request": 400,
    "content_policy": 400,
    "quota": 429,
    "overloaded": 503,
}
#: Where a provider answers a fault with another status than the others do.
_API_STATUS: dict[tuple[str, str], int] = {("anthropic", "quota"): 400, ("anthropic", "overloaded"): 529}


def _messages(model: str, retry_after_s: float, status: int) -> dict[str, str]:
    return {
        "rate_limit": f"Rate limit reached for {model} (simulated). Please try again in {retry_after_s}s.",
        "server_error": f"Simulated upstream failure (HTTP {status}) while processing your request.",
        "bad_request": "Invalid request: simulated bad request for 'messages'.",
    }


def error_response(
    api: str, fault: FaultKind, model: str, *, prompt_tokens: int, retry_after_s: float = 1.0, status: int = 500
) -> tuple[int, JsonDict, dict[str, str]]:
    """``(status, body, headers)`` of a provider's error reply for one fault.

    Raises ``ValueError`` for faults that are not an error body (timeout, malformed,
    stream_cut, invalid_json, the stream faults).
    """
    if fault in ("timeout", "malformed", "stream_cut", "invalid_json") or fault.startswith(("stream_", "slow_")):
        raise ValueError(f"{fault} is not an error response")
    code = status if fault == "server_error" else _API_STATUS.get((api, fault), _STATUS[fault])
    headers = {"retry-after": f"{retry_after_s:g}"} if fault == "rate_limit" else {}
    msgs = _messages(model, retry_after_s, code)
    if api == "openai":
        return code, _openai_error(fault, model, prompt_tokens, msgs), headers
    if api == "anthropic":
        return code, _anthropic_error(fault, prompt_tokens, msgs, code), headers
    return code, {"error": _ollama_error(fault, prompt_tokens, msgs)}, headers


def _openai_error(fault: str, model: str, prompt_tokens: int, msgs: dict[str, str]) -> JsonDict:
    err: dict[str, tuple[str, str, str | None, str | None]] = {
        "rate_limit": (msgs["rate_limit"], "requests", None, "rate_limit_exceeded"),
        "server_error": (msgs["server_error"], "server_error", None, None),
        "context_length": (
            f"This model's maximum context length is {OPENAI_CONTEXT_LIMIT} tokens. However, your messages "
            f"resulted in {OPENAI_CONTEXT_LIMIT + prompt_tokens} tokens. Please reduce the length of the messages.",
            "invalid_request_error", "messages", "context_length_exceeded",
        ),
        # Never echo the key, not even masked.
        "auth": ("Incorrect API key provided. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.", "invalid_request_error", None, "invalid_api_key"),
        "bad_request": (msgs["bad_request"], "invalid_request_error", "messages", None),
        "content_policy": (
            "Your request was rejected as a result of our safety system. (simulated)",
            "invalid_request_error", None, "content_policy_violation",
        ),
        "quota": ("You exceeded your current quota, please check your plan and billing details. (simulated)",
                  "insufficient_quota", None, "insufficient_quota"),
        "overloaded": ("The server is overloaded or not ready yet. (simulated)", "server_error", None, None),
    }
    message, type_, param, code = err[fault]
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _anthropic_error(fault: str, prompt_tokens: int, msgs: dict[str, str], status: int) -> JsonDict:
    err: dict[str, tuple[str, str]] = {
        "rate_limit": ("rate_limit_error", msgs["rate_limit"]),
        # "overloaded_error" would make LiteLLM raise InternalServerError even for 503.
        "server_error": ("api_error", msgs["server_error"]),
        "context_length": (
            "invalid_request_error",
            f"prompt is too long: {ANTHROPIC_CONTEXT_LIMIT + prompt_tokens} tokens > {ANTHROPIC_CONTEXT_LIMIT} maximum",
        ),
        "auth": ("authentication_error", "invalid x-api-key"),
        "bad_request": ("invalid_request_error", msgs["bad_request"]),
        "content_policy": ("invalid_request_error", "Output blocked by content filtering policy"),
        "quota": ("invalid_request_error", "Your credit balance is too low to access the Anthropic API. (simulated)"),
        "overloaded": ("overloaded_error", "Overloaded (simulated)"),
    }
    type_, message = err[fault]
    return {"type": "error", "error": {"type": type_, "message": message}}


def _ollama_error(fault: str, prompt_tokens: int, msgs: dict[str, str]) -> str:
    return {
        "rate_limit": msgs["rate_limit"],
        "server_error": msgs["server_error"],
        "context_length": f"input length ({prompt_tokens} tokens) exceeds the available context size",
        "auth": "unauthorized",
        "bad_request": msgs["bad_request"],
        "content_policy": "content_policy_violation: request rejected by the simulated safety system",
        "quota": "insufficient_quota: the simulated account has no credit left",
        "overloaded": "server overloaded, please retry shortly (simulated)",
    }[fault]
