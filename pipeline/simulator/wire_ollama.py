"""Ollama's wire format (``/api/generate``, ``/api/chat``, ``/api/embed``, legacy ``/api/embeddings``,
the tags list, errors).

Ollama sends tool arguments as objects and its errors as one string; kept apart so those
differences sit in one place, next to what LiteLLM's ``ollama/`` and ``ollama_chat/`` code expects.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.simulator.wire_common import JsonDict, ToolCall


def ollama_tool_call(call: ToolCall) -> JsonDict:
    """Ollama sends arguments as an object, not a string, and no id."""
    return {"function": {"name": call.name, "arguments": call.arguments}}


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


def ollama_tags(models: list[str]) -> JsonDict:
    return {
        "models": [
            {"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 0, "digest": "sim",
             "details": {"format": "gguf", "family": "llama", "parameter_size": "8B"}}
            for m in models
        ]
    }


def ollama_embed(model: str, vectors: list[list[float]], prompt_tokens: int) -> JsonDict:
    """``/api/embed`` (what LiteLLM ``ollama/`` embeddings call)."""
    return {"model": model, "embeddings": vectors, "total_duration": 1_000_000, "load_duration": 0,
            "prompt_eval_count": prompt_tokens}


def ollama_embeddings_legacy(vectors: list[list[float]]) -> JsonDict:
    """Legacy ``/api/embeddings``: one ``prompt`` in, one ``embedding`` out."""
    return {"embedding": vectors[0] if vectors else []}


def ollama_error(fault: str, prompt_tokens: int, msgs: dict[str, str]) -> str:
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
