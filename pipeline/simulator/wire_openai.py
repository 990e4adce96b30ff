"""OpenAI's wire format (chat completions, embeddings, models list, errors); Azure OpenAI answers in it too.

Bodies as OpenAI sends them, so LiteLLM's OpenAI provider code parses them as it would the real
ones; error texts are chosen to hit LiteLLM's exception mapping
(``litellm/litellm_core_utils/exception_mapping_utils.py``).
"""

from __future__ import annotations

import base64
import struct

from pipeline.simulator.wire_common import NO_DETAILS, Choice, JsonDict, ToolCall, UsageDetails

OPENAI_CONTEXT_LIMIT = 128_000


def openai_tool_call(call: ToolCall) -> JsonDict:
    return {"id": call.openai_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}


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

def openai_models(models: list[str], created: int) -> JsonDict:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "simulator"} for m in models],
    }


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


def openai_error(fault: str, model: str, prompt_tokens: int, msgs: dict[str, str]) -> JsonDict:
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
