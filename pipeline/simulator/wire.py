"""The provider wire formats' front door: a success or error body for whichever API a request spoke.

``success_body`` and ``error_response`` pick the provider's builder (``wire_openai``,
``wire_anthropic``, ``wire_ollama``; shared pieces in ``wire_common``) and the fault's HTTP
status, so the server never branches on the provider itself. Every builder is re-exported here
because the simulator and its tests address them as ``wire.<name>``. Everything is a cheap
function of its arguments, so the server stays fast and deterministic. Error texts are chosen to
hit LiteLLM's exception mapping (see ``litellm/litellm_core_utils/exception_mapping_utils.py``).

Chat bodies carry either text or one tool call (``ToolCall``: OpenAI ``tool_calls``,
Anthropic ``tool_use`` block, Ollama ``message.tool_calls``); embedding bodies carry
deterministic unit vectors. What to answer is decided in ``reply``; streamed
shapes live in ``stream``.
"""

from __future__ import annotations

from pipeline.simulator.faults import FaultKind
from pipeline.simulator.wire_anthropic import (
    ANTHROPIC_CONTEXT_LIMIT,
    anthropic_error,
    anthropic_message,
    anthropic_tool_use,
    anthropic_usage,
)
from pipeline.simulator.wire_common import (
    NO_DETAILS,
    Choice,
    JsonDict,
    ToolCall,
    UsageDetails,
    embedding_inputs,
    embedding_vector,
    estimate_tokens,
    last_user_text,
    prompt_texts,
    reply_text,
    text_of,
)
from pipeline.simulator.wire_ollama import (
    ollama_chat,
    ollama_embed,
    ollama_embeddings_legacy,
    ollama_error,
    ollama_generate,
    ollama_now,
    ollama_tags,
    ollama_tool_call,
)
from pipeline.simulator.wire_openai import (
    OPENAI_CONTEXT_LIMIT,
    openai_chat,
    openai_embeddings,
    openai_error,
    openai_logprobs,
    openai_models,
    openai_tool_call,
    openai_usage,
)

__all__ = [
    "ANTHROPIC_CONTEXT_LIMIT", "MALFORMED_BODY", "NO_DETAILS", "OPENAI_CONTEXT_LIMIT", "Choice", "JsonDict",
    "ToolCall", "UsageDetails", "anthropic_message", "anthropic_tool_use", "anthropic_usage", "embedding_inputs",
    "embedding_vector", "error_response", "estimate_tokens", "last_user_text", "ollama_chat", "ollama_embed",
    "ollama_embeddings_legacy", "ollama_generate", "ollama_now", "ollama_tags", "ollama_tool_call", "openai_chat",
    "openai_embeddings", "openai_logprobs", "openai_models", "openai_tool_call", "openai_usage", "prompt_texts",
    "reply_text", "success_body", "text_of",
]

# Served with 200 + application/json: looks like the start of a reply, never parses.
MALFORMED_BODY = b'{"id": "sim-malformed", "object": "chat.completion", "choices": [{"message": {"content": "tru'


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
        return code, openai_error(fault, model, prompt_tokens, msgs), headers
    if api == "anthropic":
        return code, anthropic_error(fault, prompt_tokens, msgs, code), headers
    return code, {"error": ollama_error(fault, prompt_tokens, msgs)}, headers
