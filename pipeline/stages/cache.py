"""Cache stage (pure): the exact-match response cache key of a request, and whether it may be cached.

The key covers exactly what determines the answer: the model that would answer and the
request's inputs to it. It leaves out who asked and how the answer is delivered (request_id,
tenant, metadata, deadlines, stream, reply_to, cache, task_type, cost ceilings), and a
template's name and variables: the key is taken over the *rendered* messages, which carry them.

Canonical form: each part dumped to JSON-mode data, serialised by orjson with sorted keys (at
every depth), then sha256. So key order in the producer's JSON never matters, while every value
does: whitespace inside message text, `temperature` None vs 0, 1 vs 1.0 inside a tool schema.
Bump `KEY_VERSION` whenever what goes into the key changes, so old entries are never misread.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pipeline.contracts.models import CompletionRequest, RequestKind

KEY_VERSION = 1


def _canonical(model: str, request: CompletionRequest) -> dict[str, Any]:
    return {
        "v": KEY_VERSION,
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
    }


def cache_key(model: str, request: CompletionRequest) -> str:
    """Hex sha256 of the canonical request as `model` (a catalog model name) would answer it.

    Raises ValueError for a completion without messages (a template not yet rendered): keyed
    without its messages, every request of a template would share one answer.
    """
    if not model:
        raise ValueError("model must be a non-empty catalog model name")
    if request.kind is RequestKind.COMPLETION and request.messages is None:
        raise ValueError("cache_key needs the rendered messages; render the request's template first")
    doc = orjson.dumps(_canonical(model, request), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(doc).hexdigest()


def cacheable(request: CompletionRequest) -> bool:
    """False when the producer opted out (`cache: false`); True otherwise."""
    return request.cache is not False
