"""The simulator's request log: call numbering, one entry per provider call, per-model outcome counts.

What ``/_sim/requests`` and ``/_sim/stats`` serve and tests assert on. Kept apart from the
endpoints because what is logged is a privacy decision of its own: correlation headers and
sampling parameters are, credentials never are (only whether one was sent, in which header,
and whether ``api_keys`` accepted it).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from aiohttp import web

from pipeline.simulator import azure, rerank
from pipeline.simulator.faults import Decision, SimulatorConfig

# Request headers worth keeping for correlation; credentials are never in this list.
LOGGED_HEADERS: tuple[str, ...] = ("x-request-id", "x-pipeline-request-id", "anthropic-version", "user-agent")
#: The sampling parameters a chat request's log entry shows (``params``), wherever the wire format
#: puts them: top level (OpenAI, Anthropic) or Ollama's ``options``.
LOGGED_PARAMS: tuple[str, ...] = (
    "temperature", "top_p", "top_k", "stop", "stop_sequences", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "reasoning_effort", "service_tier", "n",
    "max_tokens", "max_completion_tokens", "num_predict", "thinking",
)


def logged_params(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters a chat request carried, as it sent them."""
    options = body.get("options")
    sources = (body, options) if isinstance(options, dict) else (body,)
    return {name: source[name] for source in sources for name in LOGGED_PARAMS if source.get(name) is not None}


def sent_key(request: web.Request) -> str | None:
    """The API key a request carries (bearer token, Anthropic x-api-key or Azure api-key)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.headers.get("api-key") or None


class RequestLog:
    """The last ``size`` calls' entries (oldest dropped) and the outcome counts since the last clear."""

    def __init__(self, size: int) -> None:
        self._log: deque[dict[str, Any]] = deque(maxlen=size)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._seq = 0

    @property
    def last_seq(self) -> int:
        """Provider calls numbered so far (a clear does not restart the numbering)."""
        return self._seq

    def number(self) -> int:
        """The next call's ``seq``."""
        self._seq += 1
        return self._seq

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        return [entry for entry in self._log if entry["seq"] > since]

    def clear(self) -> None:
        self._log.clear()
        self._counts.clear()

    def stats(self) -> dict[str, Any]:
        by_model: dict[str, dict[str, int]] = {}
        by_outcome: Counter[str] = Counter()
        for (model, outcome), n in self._counts.items():
            by_model.setdefault(model, {})[outcome] = n
            by_outcome[outcome] += n
        return {"total": sum(by_outcome.values()), "by_model": by_model, "by_outcome": dict(by_outcome)}

    def record(
        self, config: SimulatorConfig, request: web.Request, api: str, model: str, body: dict[str, Any],
        decision: Decision, status: int, latency_ms: float, seq: int, usage: tuple[int, int],
        *, kind: str, streamed: bool,
    ) -> None:
        headers = {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers}
        entry: dict[str, Any] = {
            "seq": seq,
            "ts": time.time(),
            "api": api,
            "path": request.path,
            "model": model,
            "outcome": decision.outcome,
            "status": status,
            "kind": kind,  # "chat", "embedding" or "rerank"
            "stream": streamed,  # a streamed (SSE/NDJSON) 200 reply
            "latency_ms": round(latency_ms, 3),
            # What the reply's usage says (0 completion tokens for error replies).
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "headers_subset": headers,
            # Whether a credential was sent, never its value.
            "key_present": sent_key(request) is not None or bool(request.headers.get("authorization")),
            # Which header carried it (Azure: api-key, or authorization for an Entra ID token).
            "key_header": next((h for h in ("authorization", "x-api-key", "api-key") if request.headers.get(h)), None),
            # Whether the key was one `api_keys` accepts for this model (`unchecked`: none configured).
            "auth": config.key_check(model, sent_key(request)),
        }
        for field in ("metadata", "user"):
            if body.get(field) is not None:
                entry[field] = body[field]
        if api == "azure":  # the deployment is the model; the api-version as the caller sent it
            entry["deployment"] = model
            entry["api_version"] = request.query.get(azure.API_VERSION_PARAM)
            entry["body_model"] = body.get("model")
        if kind == "rerank":
            entry["params"] = {name: body[name] for name in rerank.LOGGED_PARAMS if body.get(name) is not None}
            entry["documents"] = len(body.get("documents") or ())
        if kind == "chat":
            entry["params"] = logged_params(body)  # the sampling parameters received, as sent
            entry["body_keys"] = sorted(body)  # every top-level field (what an extra_body added shows here)
        self._log.append(entry)
        self._counts[(model, decision.outcome)] += 1
