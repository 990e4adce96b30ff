"""The HTTP server: provider endpoints, fault injection, request log, control API.

A real socket server (not a mock transport) so LiteLLM's own provider code,
HTTP clients, timeouts and exception mapping are exercised end to end.

Endpoints: chat (``/v1/chat/completions``, ``/v1/messages``, ``/api/chat``,
``/api/generate``; ``"stream": true`` streams SSE or NDJSON, see ``stream``),
embeddings (``/v1/embeddings``, ``/api/embed``, legacy ``/api/embeddings``), Azure
OpenAI's deployment paths for both (see ``azure``) and Cohere rerank (``/v1/rerank``,
``/v2/rerank``, see ``rerank``). Every
call goes through the fault book and the request log (never credentials). Error
faults answer before any stream starts, so a caller can still fall back;
``stream_cut`` instead drops the connection half way through a 200 reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from pipeline.simulator import azure, rerank, stream, wire
from pipeline.simulator.control import ControlApi, bad_request, json_response
from pipeline.simulator.faults import (
    RUNTIME_FIELDS,
    STREAM_FAULTS,
    Decision,
    FaultBook,
    FaultRule,
    SimulatorConfig,
)
from pipeline.simulator.reply import plan_reply

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Request headers worth keeping for correlation; credentials are never in this list.
LOGGED_HEADERS: tuple[str, ...] = ("x-request-id", "x-pipeline-request-id", "anthropic-version", "user-agent")
MAX_DIMENSIONS = 65_536  # a request's ``dimensions`` beyond this falls back to the configured size
MAX_CHOICES = 128  # a request's ``n`` beyond this is answered with this many choices
#: The sampling parameters a chat request's log entry shows (``params``), wherever the wire format
#: puts them: top level (OpenAI, Anthropic) or Ollama's ``options``.
LOGGED_PARAMS: tuple[str, ...] = (
    "temperature", "top_p", "top_k", "stop", "stop_sequences", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "reasoning_effort", "service_tier", "n",
    "max_tokens", "max_completion_tokens", "num_predict", "thinking",
)


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


def logged_params(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters a chat request carried, as it sent them."""
    options = body.get("options")
    sources = (body, options) if isinstance(options, dict) else (body,)
    return {name: source[name] for source in sources for name in LOGGED_PARAMS if source.get(name) is not None}


#: What a request with a key `api_keys` does not accept gets: the provider's 401.
_KEY_REJECTED = FaultRule(fault="auth")


def _sent_key(request: web.Request) -> str | None:
    """The API key a request carries (bearer token, Anthropic x-api-key or Azure api-key)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.headers.get("api-key") or None


def _wire_format(api: str) -> str:
    """The body format an API speaks: Azure OpenAI answers in OpenAI's."""
    return "openai" if api == "azure" else api


_json = json_response
_bad = bad_request


@dataclass(frozen=True, slots=True)
class _Call:
    body: dict[str, Any]
    model: str
    decision: Decision
    seq: int


class ProviderSimulator:
    """OpenAI/Anthropic/Ollama look-alike on a real port; ``async with`` starts and stops it."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.book = FaultBook(self.config.rules, seed=self.config.seed)
        self._jitter = random.Random(f"jitter-{self.config.seed}")
        self._log: deque[dict[str, Any]] = deque(maxlen=self.config.request_log_size)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._seq = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind (port 0 = any free port) and return the base URL."""
        self._closing = asyncio.Event()
        # handler_cancellation: a client that times out must not leave a hang behind.
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self._url = f"http://{host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ProviderSimulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ in-process access

    @property
    def calls(self) -> int:
        """Provider calls numbered so far (the last request-log ``seq``)."""
        return self._seq

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return [entry for entry in self._log if entry["seq"] > since]

    def clear_requests(self) -> None:
        self._log.clear()
        self._counts.clear()

    def stats(self) -> dict[str, Any]:
        by_model: dict[str, dict[str, int]] = {}
        by_outcome: Counter[str] = Counter()
        for (model, outcome), n in self._counts.items():
            by_model.setdefault(model, {})[outcome] = n
            by_outcome[outcome] += n
        return {"total": sum(by_outcome.values()), "by_model": by_model, "by_outcome": dict(by_outcome)}

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Apply runtime changes (validated); raises ``ValueError``/``ValidationError``."""
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(f"not changeable at runtime: {sorted(unknown)}")
        self.config = SimulatorConfig.model_validate({**self.config.model_dump(), **changes})
        return self.config

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path, api in (("/v1/chat/completions", "openai"), ("/chat/completions", "openai"),
                          ("/v1/messages", "anthropic"), ("/api/generate", "ollama"), ("/api/chat", "ollama")):
            app.router.add_post(path, self._provider_handler(api))
        for path, api in (("/v1/embeddings", "openai"), ("/embeddings", "openai"),
                          ("/api/embed", "ollama"), ("/api/embeddings", "ollama")):
            app.router.add_post(path, self._embedding_handler(api))
        app.router.add_post(azure.CHAT_PATH, self._azure_handler(self._complete))
        app.router.add_post(azure.EMBEDDINGS_PATH, self._azure_handler(self._embed))
        app.router.add_post(azure.V1_CHAT_PATH, self._azure_handler(self._complete, versioned=False))
        app.router.add_post(azure.V1_EMBEDDINGS_PATH, self._azure_handler(self._embed, versioned=False))
        for path in rerank.PATHS:
            app.router.add_post(path, self._rerank)
        ControlApi(self).register(app)
        return app

    def _provider_handler(self, api: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._complete(request, api)

        return handle

    def _embedding_handler(self, api: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._embed(request, api)

        return handle

    @staticmethod
    def _azure_handler(
        serve: Callable[[web.Request, str], Awaitable[web.StreamResponse]], *, versioned: bool = True
    ) -> Handler:
        """An Azure endpoint: a deployment path is refused with Azure's 400 without ``api-version``."""
        async def handle(request: web.Request) -> web.StreamResponse:
            if versioned and not request.query.get(azure.API_VERSION_PARAM):
                return _json(azure.missing_api_version(), status=400)
            return await serve(request, "azure")

        return handle

    async def _admit(self, request: web.Request, api: str) -> _Call | web.Response:
        """Parse the body, decide its fault (if any) and number the call; a 400 for a bad body.

        The model is the body's ``model``, or on Azure the deployment named in the path."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad("request body is not valid JSON")
        if not isinstance(body, dict):
            return _bad("request body must be a JSON object")
        model = request.match_info.get("deployment") or str(body.get("model", ""))
        decision = self.book.decide(model, api)
        if decision.fault is None and self.config.key_check(model, _sent_key(request)) == "rejected":
            decision = Decision(fault="auth", rule=_KEY_REJECTED)  # the provider's own 401 for a wrong key
        self._seq += 1
        return _Call(body, model, decision, self._seq)

    def _delay_ms(self, decision: Decision) -> float:
        delay_ms = self.config.latency_ms + decision.extra_latency_ms
        if self.config.latency_jitter_ms:
            delay_ms += self._jitter.uniform(0, self.config.latency_jitter_ms)
        return delay_ms

    async def _wait(self, delay_ms: float, hang_s: float) -> None:
        """Latency, then a timeout fault's hang (cut short when the server stops)."""
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if hang_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=hang_s)

    async def _complete(self, request: web.Request, api: str) -> web.StreamResponse:
        call = await self._admit(request, api)
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        cfg = self.config
        fmt = _wire_format(api)
        prompt_tokens = cfg.prompt_tokens or wire.estimate_tokens(wire.prompt_texts(fmt, body))
        delay_ms = self._delay_ms(decision)
        hang_s = decision.rule.hang_s if decision.fault == "timeout" and decision.rule else 0.0
        streaming = body.get("stream") is True
        choices = _choices(fmt, body, streaming)
        error = self._error_reply(api, model, decision, prompt_tokens,
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
        self._record(request, api, model, body, decision, status, delay_ms + hang_s * 1000, seq,
                     (prompt_tokens, completion), kind="chat", streamed=streaming and error is None)
        await self._wait(delay_ms, hang_s)
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
            return await self._send_stream(request, frames, seq, fault=decision.fault,
                                           hang_s=decision.rule.hang_s if decision.rule else 0.0)
        payload = wire.success_body(
            fmt, request.path, model, reply.content, prompt_tokens, completion, seq=seq,
            created=int(time.time()), tool_call=reply.tool_call,
            more=tuple((r.content, r.tool_call) for r in replies[1:]), logprobs_top=_logprobs_top(body),
            details=_usage_details(cfg),
        )
        return await self._send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    def _error_reply(
        self, api: str, model: str, decision: Decision, prompt_tokens: int, *, api_version: str = ""
    ) -> web.Response | None:
        """The reply for an error fault (or malformed), or ``None`` when the request gets a 200 reply
        (in the API's own error shape; ``api_version``: Azure's, which its texts quote)."""
        fault, rule = decision.fault, decision.rule
        if fault == "malformed":
            return web.Response(body=wire.MALFORMED_BODY, content_type="application/json")
        if fault in (None, "timeout", "stream_cut", "invalid_json") or fault in STREAM_FAULTS or rule is None:
            return None
        retry, code = rule.retry_after_s, rule.status
        if api == "azure":
            status, payload, headers = azure.error_response(
                fault, model, prompt_tokens=prompt_tokens, api_version=api_version, retry_after_s=retry, status=code)
        elif api == "cohere":
            status, payload, headers = rerank.error_response(
                fault, model, prompt_tokens=prompt_tokens, retry_after_s=retry, status=code)
        else:
            status, payload, headers = wire.error_response(
                api, fault, model, prompt_tokens=prompt_tokens, retry_after_s=retry, status=code)
        return _json(payload, status=status, headers=headers)

    async def _send_json(self, request: web.Request, payload: object, seq: int, *, cut: bool) -> web.StreamResponse:
        """A JSON reply; ``cut`` announces the full length, sends half the bytes and drops the connection."""
        data = orjson.dumps(payload)
        if not cut:
            return web.Response(body=data, content_type="application/json", headers={"x-request-id": f"sim-{seq}"})
        response = web.StreamResponse(headers={"x-request-id": f"sim-{seq}"})
        response.content_type = "application/json"
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return self._drop(request, response)

    async def _send_stream(
        self, request: web.Request, frames: stream.Frames, seq: int, *, fault: str | None, hang_s: float
    ) -> web.StreamResponse:
        """Write the frames (chunked), pausing ``stream_chunk_delay_ms`` between them; the stream
        faults (see ``faults``) cut, pause, corrupt or leave the stream unterminated."""
        response = web.StreamResponse(headers={"x-request-id": f"sim-{seq}", "cache-control": "no-cache"})
        response.content_type = frames.media_type
        await response.prepare(request)
        sent = {"stream_cut": frames.cut, "stream_malformed_chunk": frames.with_malformed,
                "stream_no_done": frames.without_terminator}.get(fault or "", frames.complete)()
        pause_at = {"stream_stall": len(frames.head) + frames.half,
                    "slow_first_token": len(frames.head)}.get(fault or "")
        for index, frame in enumerate(sent):
            delay_ms = self.config.stream_chunk_delay_ms
            if index and delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            if index == pause_at:
                await self._wait(0, hang_s)
            await response.write(frame)
        if fault == "stream_cut":
            return self._drop(request, response)
        if fault == "stream_no_done":
            await self._wait(0, hang_s)  # the connection stays open, the terminator never comes
        await response.write_eof()
        return response

    @staticmethod
    def _drop(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Close the socket after flushing what was written: no terminating chunk, a truncated body.

        aiohttp's ``write_eof`` then fails with a ``ConnectionError``, which it treats as
        a client disconnect (nothing logged, nothing more sent).
        """
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response

    async def _embed(self, request: web.Request, api: str) -> web.StreamResponse:
        call = await self._admit(request, api)
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        cfg = self.config
        texts = wire.embedding_inputs(body)
        prompt_tokens = cfg.prompt_tokens or wire.estimate_tokens(texts)
        delay_ms = self._delay_ms(decision)
        hang_s = decision.rule.hang_s if decision.fault == "timeout" and decision.rule else 0.0
        error = self._error_reply(api, model, decision, prompt_tokens,
                                  api_version=request.query.get(azure.API_VERSION_PARAM, ""))
        self._record(request, api, model, body, decision, error.status if error is not None else 200,
                     delay_ms + hang_s * 1000, seq, (prompt_tokens, 0), kind="embedding", streamed=False)
        await self._wait(delay_ms, hang_s)
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
        return await self._send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    async def _rerank(self, request: web.Request) -> web.StreamResponse:
        """Cohere rerank (v1 and v2 bodies are the same for what LiteLLM sends)."""
        call = await self._admit(request, "cohere")
        if isinstance(call, web.Response):
            return call
        body, model, decision, seq = call.body, call.model, call.decision, call.seq
        try:
            query, documents, top_n = rerank.parse(body)
        except rerank.RerankRequestError as exc:
            return _json({"id": f"sim-{seq}", "message": str(exc)}, status=400)
        prompt_tokens = self.config.prompt_tokens or wire.estimate_tokens([query, *documents])
        delay_ms = self._delay_ms(decision)
        hang_s = decision.rule.hang_s if decision.fault == "timeout" and decision.rule else 0.0
        error = self._error_reply("cohere", model, decision, prompt_tokens)
        self._record(request, "cohere", model, body, decision, error.status if error is not None else 200,
                     delay_ms + hang_s * 1000, seq, (prompt_tokens, 0), kind="rerank", streamed=False)
        await self._wait(delay_ms, hang_s)
        if error is not None:
            error.headers["x-request-id"] = f"sim-{seq}"
            return error
        payload = rerank.success_body(query, documents, top_n, seq=seq, return_documents=body.get("return_documents")
                                      is True, tokens=prompt_tokens)
        return await self._send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    def _record(
        self, request: web.Request, api: str, model: str, body: dict[str, Any],
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
            "key_present": _sent_key(request) is not None or bool(request.headers.get("authorization")),
            # Which header carried it (Azure: api-key, or authorization for an Entra ID token).
            "key_header": next((h for h in ("authorization", "x-api-key", "api-key") if request.headers.get(h)), None),
            # Whether the key was one `api_keys` accepts for this model (`unchecked`: none configured).
            "auth": self.config.key_check(model, _sent_key(request)),
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


async def _serve_until_signal(host: str, port: int, config: SimulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = ProviderSimulator(config)
    url = await sim.start(host, port)
    try:
        print(f"simulator listening on {url}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def serve(host: str, port: int, config: SimulatorConfig) -> None:
    """Blocking CLI entry: print ``simulator listening on URL`` first, run until SIGINT/SIGTERM."""
    asyncio.run(_serve_until_signal(host, port, config))


run_forever = serve
