"""Rerank calls through LiteLLM's rerank API (`litellm.arerank`): the call and its answer, parsed.

Kept beside `llm.py` (which dispatches here on `kind: rerank`) so the chat module stays about chat.
Cohere's answer (LiteLLM passes it through): `{id, results: [{index, relevance_score}], meta:
{billed_units: {search_units}, tokens}}`. A rerank is billed per search unit (Cohere: one per query
of up to 100 documents), so the units are what the call stage prices; when a provider reports none,
Cohere's rule stands in.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.contracts.models import CompletionRequest, ErrorCode, RerankResult
from pipeline.transport.llm_errors import classify
from pipeline.transport.provider import Endpoint, ProviderError, ProviderResponse, TokenUsage, search_units

#: Rerank arguments only the request sets.
_REQUEST_OWNED = frozenset({"query", "documents", "top_n", "return_documents", "rank_fields", "max_chunks_per_doc"})


async def rerank(
    spec: Endpoint, request: CompletionRequest, kwargs: dict[str, Any], secrets: tuple[str, ...], timeout_s: float
) -> ProviderResponse:
    """One rerank attempt; every failure is a `ProviderError` (LiteLLM's exception classified)."""
    import litellm

    documents = list(request.documents or ())
    # What to rank comes from the request alone, never from a deployment's pass-through parameters.
    params: dict[str, Any] = {k: v for k, v in kwargs.items() if k not in _REQUEST_OWNED}
    params.update(query=request.query or "", documents=documents, return_documents=False)
    if request.top_n is not None:
        params["top_n"] = request.top_n
    try:
        async with asyncio.timeout(timeout_s):  # the attempt's limit, not only each HTTP read
            response = await litellm.arerank(**params)
    except TimeoutError:
        raise ProviderError(ErrorCode.TIMEOUT, f"{spec.name}: no answer within {timeout_s:g} s") from None
    except Exception as exc:
        raise classify(exc, secrets) from None
    return parse_rerank(response, spec, len(documents), request.top_n)


def _field(source: Any, name: str) -> Any:
    """A key of a dict (LiteLLM's TypedDicts) or an attribute of an object, else None."""
    return source.get(name) if isinstance(source, dict) else getattr(source, name, None)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def parse_rerank(response: Any, spec: Endpoint, documents: int, top_n: int | None) -> ProviderResponse:
    """The ranked results (best first), checked against the documents sent; MALFORMED_RESPONSE otherwise."""
    try:
        rows = _field(response, "results")
        if not isinstance(rows, list):
            raise ValueError("no results")
        results = tuple(sorted(
            (RerankResult(index=int(_field(r, "index")), relevance_score=float(_field(r, "relevance_score")))
             for r in rows),
            key=lambda r: -r.relevance_score))
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ProviderError(ErrorCode.MALFORMED_RESPONSE, f"{spec.name}: unusable rerank response: {exc}") from None
    wrong = sorted({r.index for r in results if r.index >= documents})
    if wrong or len({r.index for r in results}) != len(results) or len(results) > (top_n or documents):
        raise ProviderError(ErrorCode.MALFORMED_RESPONSE,
                            f"{spec.name}: rerank results do not match the {documents} documents sent")
    meta = _field(response, "meta")
    billed = _field(meta, "billed_units") if meta is not None else None
    tokens = _field(meta, "tokens") if meta is not None else None
    units = _count(_field(billed, "search_units")) if billed is not None else 0
    prompt = _count(_field(tokens, "input_tokens")) if tokens is not None else 0
    details = TokenUsage(prompt_tokens=prompt, search_units=units or search_units(documents))
    return ProviderResponse(content=None, prompt_tokens=prompt, completion_tokens=0, rerank_results=results,
                            details=details)
