"""The HTTP server: provider endpoints, fault injection, request log, control API.

A real socket server (not a mock transport) so LiteLLM's own provider code,
HTTP clients, timeouts and exception mapping are exercised end to end.

Endpoints: chat (``/v1/chat/completions``, ``/v1/messages``, ``/api/chat``,
``/api/generate``; ``"stream": true`` streams SSE or NDJSON, see ``stream``) and
embeddings (``/v1/embeddings``, ``/api/embed``, legacy ``/api/embeddings``). Every
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
from pydantic import TypeAdapter, ValidationError

from pipeline.simulator import stream, wire
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
_RULES = TypeAdapter(list[FaultRule])
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


def logged_params(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters a chat request carried, as it sent them."""
    options = body.get("options")
    sources = (body, options) if isinstance(options, dict) else (body,)
    return {name: source[name] for source in sources for name in LOGGED_PARAMS if source.get(name) is not None}


#: What a request with a key `api_keys` does not accept gets: the provider's 401.
_KEY_REJECTED = FaultRule(fault="auth")


def _sent_key(request: web.Request) -> str | None:
    """The API key a request carries (OpenAI/Ollama bearer token or Anthropic x-api-key)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"error": message}, status=400)


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
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_get("/api/tags", self._ollama_tags)
        app.router.add_get("/_sim/requests", self._get_requests)
        app.router.add_delete("/_sim/requests", self._delete_requests)
        app.router.add_get("/_sim/rules", self._get_rules)
        app.router.add_put("/_sim/rules", self._put_rules)
        app.router.add_post("/_sim/rules", self._post_rule)
        app.router.add_delete("/_sim/rules", self._delete_rules)
        app.router.add_get("/_sim/config", self._get_config)
        app.router.add_patch("/_sim/config", self._patch_config)
        app.router.add_get("/_sim/stats", self._get_stats)
        return app

    def _provider_handler(self, api: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._complete(request, api)

        return handle

    def _embedding_handler(self, api: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._embed(request, api)

        return handle

    async def _admit(self, request: web.Request, api: str) -> _Call | web.Response:
        """Parse the body, decide its fault (if any) and number the call; a 400 for a bad body."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad("request body is not valid JSON")
        if not isinstance(body, dict):
            return _bad("request body must be a JSON object")
        model = str(body.get("model", ""))
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
        prompt_tokens = cfg.prompt_tokens or wire.estimate_tokens(wire.prompt_texts(api, body))
        delay_ms = self._delay_ms(decision)
        hang_s = decision.rule.hang_s if decision.fault == "timeout" and decision.rule else 0.0
        streaming = body.get("stream") is True
        choices = _choices(api, body, streaming)
        error = self._error_reply(api, model, decision, prompt_tokens)
        replies = [] if error is not None else [
            plan_reply(api, model, body, cfg.completion_tokens, seq=seq, invalid_json=decision.fault == "invalid_json",
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
                api, request.path, model, reply, prompt_tokens, cfg.completion_tokens, seq=seq,
                created=int(time.time()), words=cfg.stream_chunk_words, include_usage=include_usage,
            )
            return await self._send_stream(request, frames, seq, fault=decision.fault,
                                           hang_s=decision.rule.hang_s if decision.rule else 0.0)
        payload = wire.success_body(
            api, request.path, model, reply.content, prompt_tokens, completion, seq=seq,
            created=int(time.time()), tool_call=reply.tool_call,
            more=tuple((r.content, r.tool_call) for r in replies[1:]), logprobs_top=_logprobs_top(body),
        )
        return await self._send_json(request, payload, seq, cut=decision.fault == "stream_cut")

    def _error_reply(self, api: str, model: str, decision: Decision, prompt_tokens: int) -> web.Response | None:
        """The reply for an error fault (or malformed), or ``None`` when the request gets a 200 reply."""
        fault, rule = decision.fault, decision.rule
        if fault == "malformed":
            return web.Response(body=wire.MALFORMED_BODY, content_type="application/json")
        if fault in (None, "timeout", "stream_cut", "invalid_json") or fault in STREAM_FAULTS or rule is None:
            return None
        status, payload, headers = wire.error_response(
            api, fault, model, prompt_tokens=prompt_tokens, retry_after_s=rule.retry_after_s, status=rule.status
        )
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
        error = self._error_reply(api, model, decision, prompt_tokens)
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
        if api == "openai":
            fmt = body.get("encoding_format")
            fmt = fmt if isinstance(fmt, str) else None
            payload = wire.openai_embeddings(model, vectors, prompt_tokens, encoding_format=fmt)
        elif request.path.endswith("/embeddings"):
            payload = wire.ollama_embeddings_legacy(vectors)
        else:
            payload = wire.ollama_embed(model, vectors, prompt_tokens)
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
            "kind": kind,  # "chat" or "embedding"
            "stream": streamed,  # a streamed (SSE/NDJSON) 200 reply
            "latency_ms": round(latency_ms, 3),
            # What the reply's usage says (0 completion tokens for error replies).
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "headers_subset": headers,
            # Whether a credential was sent, never its value.
            "key_present": bool(request.headers.get("authorization") or request.headers.get("x-api-key")),
            # Whether the key was one `api_keys` accepts for this model (`unchecked`: none configured).
            "auth": self.config.key_check(model, _sent_key(request)),
        }
        for field in ("metadata", "user"):
            if body.get(field) is not None:
                entry[field] = body[field]
        if kind == "chat":
            entry["params"] = logged_params(body)  # the sampling parameters received, as sent
            entry["body_keys"] = sorted(body)  # every top-level field (what an extra_body added shows here)
        self._log.append(entry)
        self._counts[(model, decision.outcome)] += 1

    # ------------------------------------------------------------------ listings

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "requests": self._seq})

    async def _openai_models(self, request: web.Request) -> web.Response:
        return _json(wire.openai_models(self.config.models, created=0))

    async def _ollama_tags(self, request: web.Request) -> web.Response:
        return _json(wire.ollama_tags(self.config.models))

    # ------------------------------------------------------------------ control API

    async def _get_requests(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _bad("since must be an integer")
        return _json({"requests": self.requests(since), "last_seq": self._seq})

    async def _delete_requests(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return _json({"cleared": True})

    async def _get_rules(self, request: web.Request) -> web.Response:
        return _json({"rules": self.book.snapshot()})

    async def _put_rules(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            self.book.set_rules(_RULES.validate_python(data["rules"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            return _bad(f"expected {{'rules': [...]}}: {exc}")
        return _json({"rules": self.book.snapshot()})

    async def _post_rule(self, request: web.Request) -> web.Response:
        try:
            self.book.add_rule(FaultRule.model_validate_json(await request.read()))
        except ValidationError as exc:
            return _bad(str(exc))
        return _json({"rules": self.book.snapshot()}, status=201)

    async def _delete_rules(self, request: web.Request) -> web.Response:
        self.book.clear()
        return _json({"rules": []})

    async def _get_config(self, request: web.Request) -> web.Response:
        return _json(self.config.model_dump(mode="json", exclude={"rules"}))

    async def _patch_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            self.configure(**changes)
        except (orjson.JSONDecodeError, ValueError) as exc:  # ValidationError is a ValueError
            return _bad(str(exc))
        return _json(self.config.model_dump(mode="json", exclude={"rules"}))

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())


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
