"""The response cache as the call stage sees it: provider answers by model and normalised request.

Keys come from `stages/cache.py`; bytes are kept by a `state/response_cache.py` store (in-process
with TTL, or Redis for a fleet). Only successful answers are stored, and a hit is an attempt
that costs nothing (see `stages/call.py`).
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.contracts.models import CompletionRequest, ToolCall
from pipeline.stages.cache import cache_key, cacheable
from pipeline.state.response_cache import ResponseCache
from pipeline.transport.provider import ProviderResponse

_FORMAT = 1


def encode_answer(response: ProviderResponse) -> bytes:
    return orjson.dumps({
        "v": _FORMAT, "content": response.content, "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens, "finish_reason": response.finish_reason,
        "tool_calls": [c.model_dump(mode="json") for c in response.tool_calls],
        "embeddings": response.embeddings,
    })


def decode_answer(data: bytes) -> ProviderResponse | None:
    """None for anything unreadable (another format version, a corrupt value): a miss, not an error."""
    try:
        doc: dict[str, Any] = orjson.loads(data)
        if doc.get("v") != _FORMAT:
            return None
        embeddings = doc.get("embeddings")
        return ProviderResponse(
            content=doc["content"], prompt_tokens=int(doc["prompt_tokens"]),
            completion_tokens=int(doc["completion_tokens"]), finish_reason=doc.get("finish_reason"),
            tool_calls=tuple(ToolCall.model_validate(c) for c in doc.get("tool_calls") or ()),
            embeddings=tuple(tuple(v) for v in embeddings) if embeddings is not None else None,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class CachedAnswers:
    def __init__(self, store: ResponseCache, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s

    async def get(self, model: str, request: CompletionRequest) -> ProviderResponse | None:
        if not cacheable(request):
            return None
        data = await self.store.get(cache_key(model, request))
        return decode_answer(data) if data is not None else None

    async def put(self, model: str, request: CompletionRequest, response: ProviderResponse) -> None:
        if cacheable(request):
            await self.store.set(cache_key(model, request), encode_answer(response), self.ttl_s)
