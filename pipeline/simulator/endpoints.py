"""The provider endpoints: chat completions, embeddings and rerank, in every wire format the simulator speaks.

Each handler admits the call (parses the body, decides its fault, numbers it), works out the
usage its reply reports, logs it before any latency so a caller that timed out can already see
it, waits, then answers through ``respond``. Routes: chat (``/v1/chat/completions``,
``/v1/messages``, ``/api/chat``, ``/api/generate``), embeddings (``/v1/embeddings``,
``/api/embed``, legacy ``/api/embeddings``), Azure OpenAI's deployment paths for both (see
``azure``) and Cohere rerank (see ``rerank``). Apart from the server (``app``) so its lifecycle
and in-process API stay readable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from pipeline.simulator import azure, rerank, respond, stream, wire
from pipeline.simulator.control import bad_request, json_response
from pipeline.simulator.faults import STREAM_FAULTS, Decision, FaultRule, SimulatorConfig
from pipeline.simulator.reply import plan_reply
from pipeline.simulator.request_log import sent_key

if TYPE_CHECKING:
    from pipeline.simulator.app import ProviderSimulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
MAX_DIMENSIONS = 65_536  # a request's ``dimensions`` beyond this falls back to the configured size
MAX_CHOICES = 128  # a request's ``n`` beyond this is answered with this many choices

#: What a request with a key `api_keys` does not accept gets: the provider's 401.
_KEY_REJECTED = FaultRule(fault="auth")


def _choices(api: str, body: dict[str, Any], streaming: bool) -> int:
    """How many choices a reply carries: OpenAI's ``n`` (non-streamed), else one."""
    n = body.get("n")
    if api != "openai" or streaming or not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return 1
    return min(n, MAX_CHOICES)


def _logprobs_top(body: dict[str, Any]) -> int | None:
    """OpenAI's ``logprobs``/``top_logprobs``: None when not asked for, else how many alternatives."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return min(top, 20) if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0


def _usage_details(cfg: SimulatorConfig) -> wire.UsageDetails:
    """The usage details a chat reply reports, as configured (none by default)."""
    return wire.UsageDetails(cfg.cached_tokens, cfg.cache_write_tokens, min(cfg.reasoning_tokens,
                                                                           cfg.completion_tokens))


def _wire_format(api: str) -> str:
    """The body format an API speaks: Azure OpenAI answers in OpenAI's."""
    return "openai" if api == "azure" else api


def _hang_s(decision: Decision) -> float:
    """How long a timeout fault hangs (no other fault hangs before answering)."""
    return decision.rule.hang_s if decision.fault == "timeout" and decision.rule else 0.0


@dataclass(frozen=True, slots=True)
class _Call:
    body: dict[str, Any]
    model: str
    decision: Decision
    seq: int


class ProviderEndpoints:
    """The provider routes of one simulator (its config, fault book, request log and stop signal)."""

    def __init__(self, sim: ProviderSimulator) -> None:
        self._sim = sim
        self._jitter = random.Random(f"jitter-{sim.config.seed}")

    def register(self, app: web.Application) -> None:
        for path, api in (("/v1/chat/completions", "openai"), ("/chat/completions", "openai"),
                          ("/v1/messages", "anthropic"), ("/api/generate", "ollama"), ("/api/chat", "ollama")):
            app.router.add_post(path, self._handler(self.complete, api))
        for path, api in (("/v1/embeddings", "openai"), ("/embeddings", "openai"),
                          ("/api/embed", "ollama"), ("/api/embeddings", "ollama")):
            app.router.add_post(path, self._handler(self.embed, api))
        app.router.add_post(azure.CHAT_PATH, self._azure_handler(self.complete))
        app.router.add_post(azure.EMBEDDINGS_PATH, self._azure_handler(self.embed))
        app.router.add_post(azure.V1_CHAT_PATH, self._azure_handler(self.complete, versioned=False))
        app.router.add_post(azure.V1_EMBEDDINGS_PATH, self._azure_handler(self.embed, versioned=False))
        for path in rerank.PATHS:
            app.router.add_post(path, self.rerank)

    @staticmethod
    def _handler(serve: Serve, api: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await serve(request, api)

        return handle

    @staticmethod
    def _azure_handler(serve: Serve, *, versioned: bool = True) -> Handler:
        """An Azure endpoint: a deployment path is refused with Azure's 400 without ``api-version``."""
        async def handle(request: web.Request) -> web.StreamResponse:
            if versioned and not request.query.get(azure.API_VERSION_PARAM):
                return json_response(azure.missing_api_version(), status=400)
            return await serve(request, "azure")

        return handle

    async def _admit(self, request: web.Request, api: str) -> _Call | web.Response:
        """Parse the body, decide its fault (if any) and number the call; a 400 for a bad body.

        The model is the body's ``model``, or on Azure the deployment named in the path."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return bad_request("request body is not valid JSON")
        if not isinstance(body, dict):
            return bad_request("request body must be a JSON object")
        model = request.match_info.get("deployment") or str(body.get("model", ""))
        decision = self._sim.book.decide(model, api)
        if decision.fault is None and self._sim.config.key_check(model, sent_key(request)) == "rejected":
            decision = Decision(fault="auth", rule=_KEY_REJECTED)  # the provider's own 401 for a wrong key
        return _Call(body, model, decision, self._sim.request_log.number())

    def _delay_ms(self, decision: Decision) -> float:
        cfg = self._sim.config
        delay_ms = cfg.latency_ms + decision.extra_latency_ms
        if cfg.latency_jitter_ms:
            delay_ms += self._jitter.uniform(0, cfg.latency_jitter_ms)
        return delay_ms

    def _record(self, request: web.Request, api: str, call: _Call, status: int, latency_ms: float,
                usage: tuple[int, int], *, kind: str, streamed: bool) -> None:
        self._sim.request_log.record(self._sim.config, request, api, call.model, call.body, call.decision, status,
                                     latency_ms, call.seq, usage, kind=kind, streamed=streamed)

    async def complete(self, request: web.Request, api: str) -> web.StreamResponse:
        call = await self._admit(request, api)
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        cfg = self._sim.config
        fmt = _wire_format(api)
        prompt_tokens = cfg.prompt_tokens or wire.estimate_tokens(wire.prompt_texts(fmt, body))
        delay_ms, hang_s = self._delay_ms(decision), _hang_s(decision)
        streaming = body.get("stream") is True
        choices = _choices(fmt, body, streaming)
        error = respond.error_reply(api, model, decision, prompt_tokens,
                                    api_version=request.query.get(azure.API_VERSION_PARAM, ""))
        replies = [] if error is not None else [
            plan_reply(fmt, model, body, cfg.completion_tokens, seq=seq, invalid_json=decision.fault == "invalid_json",
                       choice=i)
            for i in range(choices)
        ]
        status = error.status if error is not None else 200
        # What the reply's usage says: none for error replies or a cut reply (it never gets there);
        # several choices are each a completion (OpenAI's usage counts them all).
        completion = cfg.completion_tokens * choices
        if decision.fault not in (None, "timeout", "invalid_json", *STREAM_FAULTS):
            completion = 0
        # Logged before sleeping so a caller that timed out can already see its request.
        self._record(request, api, call, status, delay_ms + hang_s * 1000, (prompt_tokens, completion),
                     kind="chat", streamed=streaming and error is None)
        await self._sim.pause(delay_ms, hang_s)
        if error is not None:
            error.headers["x-request-id"] = f"sim-{seq}"
            return error
        reply = replies[0]
        if streaming:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            frames = stream.frames_for(
                fmt, request.path, model, reply, prompt_tokens, cfg.completion_tokens, seq=seq,
                created=int(time.time()), words=cfg.stream_chunk_words, include_usage=include_usage,
                details=_usage_details(cfg),
            )
            return await respond.send_stream(
                request, frames, seq, fault=decision.fault, hang_s=decision.rule.hang_s if decision.rule else 0.0,
                chunk_delay_ms=lambda: self._sim.config.stream_chunk_delay_ms, wait=self._sim.pause)
        payload = wire.success_body(
            fmt, request.path, model, reply.content, prompt_tokens, completion, seq=seq,
            created=int(time.time()), tool_call=reply.tool_call,
            more=tuple((r.content, r.tool_call) for r in replies[1:]), logprobs_top=_logprobs_top(body),
            details=_usage_details(cfg),
        )
        return await respond.send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    async def embed(self, request: web.Request, api: str) -> web.StreamResponse:
        call = await self._admit(request, api)
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        cfg = self._sim.config
        texts = wire.embedding_inputs(body)
        prompt_tokens = cfg.prompt_tokens or wire.estimate_tokens(texts)
        delay_ms, hang_s = self._delay_ms(decision), _hang_s(decision)
        error = respond.error_reply(api, model, decision, prompt_tokens,
                                    api_version=request.query.get(azure.API_VERSION_PARAM, ""))
        self._record(request, api, call, error.status if error is not None else 200, delay_ms + hang_s * 1000,
                     (prompt_tokens, 0), kind="embedding", streamed=False)
        await self._sim.pause(delay_ms, hang_s)
        if error is not None:
            error.headers["x-request-id"] = f"sim-{seq}"
            return error
        dimensions = body.get("dimensions")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS:
            dimensions = cfg.embedding_dimensions
        vectors = [wire.embedding_vector(text, dimensions) for text in texts]
        payload: dict[str, Any]
        if api in ("openai", "azure"):
            fmt = body.get("encoding_format")
            fmt = fmt if isinstance(fmt, str) else None
            payload = wire.openai_embeddings(model, vectors, prompt_tokens, encoding_format=fmt)
        elif request.path.endswith("/embeddings"):
            payload = wire.ollama_embeddings_legacy(vectors)
        else:
            payload = wire.ollama_embed(model, vectors, prompt_tokens)
        return await respond.send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        """Cohere rerank (v1 and v2 bodies are the same for what LiteLLM sends)."""
        call = await self._admit(request, "cohere")
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        try:
            query, documents, top_n = rerank.parse(body)
        except rerank.RerankRequestError as exc:
            return json_response({"id": f"sim-{seq}", "message": str(exc)}, status=400)
        prompt_tokens = self._sim.config.prompt_tokens or wire.estimate_tokens([query, *documents])
        delay_ms, hang_s = self._delay_ms(decision), _hang_s(decision)
        error = respond.error_reply("cohere", model, decision, prompt_tokens)
        self._record(request, "cohere", call, error.status if error is not None else 200, delay_ms + hang_s * 1000,
                     (prompt_tokens, 0), kind="rerank", streamed=False)
        await self._sim.pause(delay_ms, hang_s)
        if error is not None:
            error.headers["x-request-id"] = f"sim-{seq}"
            return error
        payload = rerank.success_body(query, documents, top_n, seq=seq, return_documents=body.get("return_documents")
                                      is True, tokens=prompt_tokens)
        return await respond.send_json(request, payload, seq, cut=decision.fault == "stream_cut")
