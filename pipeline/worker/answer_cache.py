"""The response cache as the call stage sees it: provider answers by model and normalised request.

Keys come from `stages/cache.py`; bytes are kept by a `state/response_cache.py` store (in-process
with TTL, or Redis for a fleet). Only successful answers are stored, each with the tenant whose
call produced it. Scope `tenant` (the default) keys every answer by its tenant too, so a tenant
only ever hits its own answers, which cost nothing; scope `shared` serves every tenant, and a hit
on another tenant's answer is a `CacheHit` with `other_tenant` set, which `stages/call.py` books
at what the call would have cost.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from pipeline.contracts.models import CompletionRequest, ReplyChoice, RerankResult, ToolCall
from pipeline.stages.cache import Scope, cache_key, cacheable
from pipeline.stages.call import CacheHit
from pipeline.state.response_cache import ResponseCache
from pipeline.transport.provider import ProviderResponse, TokenUsage

_FORMAT = 1


def encode_answer(response: ProviderResponse, tenant: str | None = None) -> bytes:
    return orjson.dumps({
        "v": _FORMAT, "tenant": tenant, "content": response.content, "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens, "finish_reason": response.finish_reason,
        "tool_calls": [c.model_dump(mode="json") for c in response.tool_calls],
        "embeddings": response.embeddings,
        "results": None if response.rerank_results is None else [r.model_dump() for r in response.rerank_results],
        # The breakdown by token class: another tenant's hit is booked at what the call cost.
        "usage": dataclasses.asdict(response.details) if response.details is not None else None,
        "choices": [c.model_dump(mode="json") for c in response.choices], "logprobs": response.logprobs,
    })


def decode_answer(data: bytes) -> ProviderResponse | None:
    """None for anything unreadable (another format version, a corrupt value): a miss, not an error."""
    try:
        doc: dict[str, Any] = orjson.loads(data)
        if doc.get("v") != _FORMAT:
            return None
        embeddings, results = doc.get("embeddings"), doc.get("results")
        return ProviderResponse(
            content=doc["content"], prompt_tokens=int(doc["prompt_tokens"]),
            completion_tokens=int(doc["completion_tokens"]), finish_reason=doc.get("finish_reason"),
            tool_calls=tuple(ToolCall.model_validate(c) for c in doc.get("tool_calls") or ()),
            embeddings=tuple(tuple(v) for v in embeddings) if embeddings is not None else None,
            rerank_results=tuple(RerankResult.model_validate(r) for r in results) if results is not None else None,
            details=TokenUsage(**doc["usage"]) if doc.get("usage") else None,
            choices=tuple(ReplyChoice.model_validate(c) for c in doc.get("choices") or ()),
            logprobs=doc.get("logprobs"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def answer_tenant(data: bytes) -> str | None:
    """The tenant whose call produced a stored answer; None when the entry does not say."""
    try:
        tenant = orjson.loads(data).get("tenant")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return tenant if isinstance(tenant, str) else None


class CachedAnswers:
    def __init__(self, store: ResponseCache, ttl_s: float, scope: Scope = "tenant") -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.scope: Scope = scope

    async def get(self, model: str, request: CompletionRequest) -> CacheHit | None:
        if not cacheable(request):
            return None
        data = await self.store.get(cache_key(model, request, self.scope))
        response = decode_answer(data) if data is not None else None
        if data is None or response is None:
            return None
        # An entry that does not name its tenant counts as another tenant's: it is never served free.
        return CacheHit(response, other_tenant=answer_tenant(data) != request.tenant)

    async def put(self, model: str, request: CompletionRequest, response: ProviderResponse) -> None:
        if cacheable(request):
            await self.store.set(cache_key(model, request, self.scope), encode_answer(response, request.tenant),
                                 self.ttl_s)
