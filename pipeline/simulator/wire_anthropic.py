"""Anthropic's Messages wire format (message bodies, usage with cache reads and writes, errors).

Kept apart so the one place that says how Anthropic spells a reply is easy to hold against
LiteLLM's Anthropic provider code; error texts are chosen to hit its exception mapping.
"""

from __future__ import annotations

from pipeline.simulator.wire_common import NO_DETAILS, JsonDict, ToolCall, UsageDetails

ANTHROPIC_CONTEXT_LIMIT = 200_000


def anthropic_tool_use(call: ToolCall) -> JsonDict:
    return {"type": "tool_use", "id": call.anthropic_id, "name": call.name, "input": call.arguments}


def anthropic_usage(pt: int, ct: int, details: UsageDetails = NO_DETAILS) -> JsonDict:
    """Anthropic's ``usage``: ``input_tokens`` excludes the cache reads and writes, reported beside it."""
    read = min(details.cache_read, pt)
    write = min(details.cache_write, pt - read)
    usage: JsonDict = {"input_tokens": pt - read - write, "output_tokens": ct}
    if read or write:
        usage.update(cache_creation_input_tokens=write, cache_read_input_tokens=read)
    return usage


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


def anthropic_error(fault: str, prompt_tokens: int, msgs: dict[str, str], status: int) -> JsonDict:
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
