"""Cohere's rerank wire format (``/v1/rerank``, ``/v2/rerank``): request parsing, scores, bodies, errors.

What LiteLLM's ``cohere/`` rerank sends (``litellm/llms/cohere/rerank*/transformation.py``):
``{model, query, documents: [str | {text, ...}], top_n?, return_documents?, rank_fields?, ...}``;
what it expects back: ``{id, results: [{index, relevance_score, document?}], meta: {billed_units}}``.
Scores are deterministic (the share of the query's words a document contains), so tests can
predict the order. Pure, like ``wire``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pipeline.simulator.faults import FaultKind

JsonDict = dict[str, Any]

PATHS: tuple[str, ...] = ("/v1/rerank", "/v2/rerank", "/rerank")
#: Cohere bills one search unit per query of up to this many documents.
DOCUMENTS_PER_SEARCH_UNIT = 100
#: The options a rerank request's log entry shows (``params``).
LOGGED_PARAMS: tuple[str, ...] = ("top_n", "return_documents", "rank_fields", "max_chunks_per_doc",
                                  "max_tokens_per_doc")
_WORD = re.compile(r"\w+")


class RerankRequestError(ValueError):
    """A rerank body Cohere would refuse with a 400; the message names the field."""


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def document_text(document: object, rank_fields: object = None) -> str:
    """The text a document is ranked by: a string, its ``text``, its ``rank_fields`` or its JSON."""
    if isinstance(document, str):
        return document
    if isinstance(document, dict):
        if isinstance(rank_fields, list) and rank_fields:
            return " ".join(str(document.get(name, "")) for name in rank_fields)
        if isinstance(document.get("text"), str):
            return str(document["text"])
    return json.dumps(document, sort_keys=True)


def parse(body: JsonDict) -> tuple[str, list[str], int | None]:
    """``(query, document texts, top_n)`` of a rerank body; ``RerankRequestError`` names a bad field."""
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RerankRequestError("invalid request: query must be a non-empty string")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise RerankRequestError("invalid request: documents must be a non-empty list")
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise RerankRequestError("invalid request: top_n must be a positive integer")
    rank_fields = body.get("rank_fields")
    return query, [document_text(doc, rank_fields) for doc in documents], top_n


def relevance(query: str, document: str) -> float:
    """The share of the query's distinct words the document contains, in [0, 1]."""
    wanted = _words(query)
    if not wanted:
        return 0.0
    return round(len(wanted & _words(document)) / len(wanted), 6)


def ranked(query: str, documents: list[str], top_n: int | None) -> list[tuple[int, float]]:
    """``(index, score)`` best first (ties keep document order), cut to ``top_n``."""
    scored = sorted(((i, relevance(query, doc)) for i, doc in enumerate(documents)), key=lambda p: (-p[1], p[0]))
    return scored[:top_n] if top_n is not None else scored


def search_units(documents: int) -> int:
    """Cohere's billing: one unit per started block of 100 documents, at least one."""
    return max(1, -(-documents // DOCUMENTS_PER_SEARCH_UNIT))


def success_body(
    query: str, documents: list[str], top_n: int | None, *, seq: int, return_documents: bool, tokens: int
) -> JsonDict:
    results: list[JsonDict] = []
    for index, score in ranked(query, documents, top_n):
        result: JsonDict = {"index": index, "relevance_score": score}
        if return_documents:
            result["document"] = {"text": documents[index]}
        results.append(result)
    return {
        "id": f"rerank-sim-{seq}",
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": search_units(len(documents))},
                 "tokens": {"input_tokens": tokens, "output_tokens": 0}},
    }


_STATUS: dict[str, int] = {
    "rate_limit": 429, "context_length": 400, "auth": 401, "bad_request": 400, "content_policy": 400,
    "quota": 429, "overloaded": 503,
}


def error_response(
    fault: FaultKind, model: str, *, prompt_tokens: int, retry_after_s: float = 1.0, status: int = 500
) -> tuple[int, JsonDict, dict[str, str]]:
    """``(status, body, headers)`` of Cohere's error reply (``{"message": ...}``) for one fault.

    Texts hit LiteLLM's Cohere mapping (``_map_cohere_exception``): "invalid api token",
    "too many tokens", "internal server error". Raises ``ValueError`` for non-error faults.
    """
    if fault in ("timeout", "malformed", "stream_cut", "invalid_json") or fault.startswith(("stream_", "slow_")):
        raise ValueError(f"{fault} is not an error response")
    code = status if fault == "server_error" else _STATUS[fault]
    headers = {"retry-after": f"{retry_after_s:g}"} if fault == "rate_limit" else {}
    message = {
        "rate_limit": f"You are using a Trial key, which is limited to 10 API calls / minute for {model} (simulated). "
                      f"Please try again in {retry_after_s:g}s.",
        "server_error": f"internal server error, this has been reported to our developers (simulated HTTP {code})",
        "context_length": f"too many tokens: total number of tokens in the prompt cannot exceed 4096 - "
                          f"received {4096 + prompt_tokens} (simulated)",
        "auth": "invalid api token",  # never the key itself
        "bad_request": "invalid request: simulated bad request for 'documents'",
        "content_policy": "invalid request: blocked by the simulated safety system (content_policy_violation)",
        "quota": "You are past the monthly API call limit of your Trial key, please check your plan and billing "
                 "details (insufficient_quota, simulated)",
        "overloaded": "service unavailable: the server is overloaded, please retry shortly (simulated)",
    }[fault]
    return code, {"id": f"sim-error-{fault}", "message": message}, headers
