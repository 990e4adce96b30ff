"""Cache stage (pure): the exact-match response cache key of a request, and whether it may be cached.

The key covers exactly what determines the answer: the model that would answer and the
request's inputs to it, and (scope `tenant`, the default) the tenant that asked, so one tenant's
answer is never served to another. It leaves out how the answer is delivered (request_id,
metadata, deadlines, stream, reply_to, cache, task_type, cost ceilings), and a template's name
and variables: the key is taken over the *rendered* messages, which carry them. Scope `shared`
(`PIPELINE_RESPONSE_CACHE_SCOPE=shared`) leaves the tenant out: every tenant shares the answers.

Canonical form: each part dumped to JSON-mode data, serialised by orjson with sorted keys (at
every depth), then sha256. So key order in the producer's JSON never matters, while every value
does: whitespace inside message text, `temperature` None vs 0, 1 vs 1.0 inside a tool schema.
Bump `KEY_VERSION` whenever what goes into the key changes, so old entries are never misread.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from pipeline.contracts.models import CompletionRequest, RequestKind

KEY_VERSION = 3  # 2: the scope (and, scope `tenant`, the tenant) joined the key; 3: the sampling parameters

#: The request's OpenAI chat parameters: each changes the answer, so each is part of the key.
SAMPLING_FIELDS = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                   "top_logprobs", "user", "parallel_tool_calls", "reasoning_effort", "service_tier", "n",
                   "extra_body")

Scope = Literal["tenant", "shared"]
SCOPES: tuple[Scope, ...] = ("tenant", "shared")


def _canonical(model: str, request: CompletionRequest, scope: Scope) -> dict[str, Any]:
    doc = _canonical_common(model, request, scope)
    if request.kind is RequestKind.RERANK:  # only then: every other request keeps its key
        doc["rerank"] = {"query": request.query, "documents": list(request.documents or ()), "top_n": request.top_n}
    return doc


def _canonical_common(model: str, request: CompletionRequest, scope: Scope) -> dict[str, Any]:
    return {
        "v": KEY_VERSION,
        "scope": scope,
        "tenant": request.tenant if scope == "tenant" else None,
        "model": model,
        "kind": request.kind.value,
        "messages": None if request.messages is None
        else [m.model_dump(mode="json", exclude_none=True) for m in request.messages],
        "input": None if request.input is None else list(request.input),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "tools": None if request.tools is None
        else [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in request.tools],
        "tool_choice": request.tool_choice,
        "response_format": None if request.response_format is None
        else request.response_format.model_dump(mode="json", by_alias=True, exclude_none=True),
        # Everything else that shapes the answer (the OpenAI chat parameters, the extra_body hatch).
        "sampling": request.model_dump(mode="json", include=set(SAMPLING_FIELDS), exclude_none=True),
    }


def cache_key(model: str, request: CompletionRequest, scope: Scope = "tenant") -> str:
    """Hex sha256 of the canonical request as `model` (a catalog model name) would answer it,
    for the request's tenant alone (`scope="tenant"`) or for every tenant (`scope="shared"`).

    Raises ValueError for a completion without messages (a template not yet rendered): keyed
    without its messages, every request of a template would share one answer.
    """
    if not model:
        raise ValueError("model must be a non-empty catalog model name")
    if request.kind is RequestKind.COMPLETION and request.messages is None:
        raise ValueError("cache_key needs the rendered messages; render the request's template first")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    doc = orjson.dumps(_canonical(model, request, scope), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(doc).hexdigest()


def cacheable(request: CompletionRequest) -> bool:
    """False when the producer opted out (`cache: false`); True otherwise."""
    return request.cache is not False
