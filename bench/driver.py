"""Load generator for bench/compare.py: one system, one load shape, one process.

    python bench/driver.py --system floor|litellm|pipeline|proxy --target URL-or-BOOTSTRAP
                           (--concurrency N | --rate R) --duration S [--warmup S]

Runs apart from the orchestrator so that, for `floor` and `litellm`, this process *is* the
system under test and its CPU can be read cleanly. It prints `MEASURE_START` after warm-up and
`MEASURE_END` when the measured window closes (the orchestrator reads the system's CPU at both),
then one JSON line: completed and failed calls in the window and their latencies in ms.

Closed loop (`--concurrency`): N callers, each sending its next request when the last returns;
this finds saturation throughput. Open loop (`--rate`): requests start on a fixed schedule
whatever the replies do, and latency runs from the scheduled start, so a stalled system cannot
hide its queueing (no coordinated omission). Runs on uvloop, like the worker and the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-not-a-secret"
PROMPT = "Summarise in one line: Kafka is a distributed, partitioned, replicated commit log."
MAX_TOKENS = 64

Send = Callable[[int], Awaitable[None]]


def _chat_body() -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}


async def floor_sender(target: str, api_key: str = API_KEY) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """A plain aiohttp POST of the OpenAI chat body: what any caller pays at minimum."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = f"{target.rstrip('/')}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    body = orjson.dumps(_chat_body())

    async def send(i: int) -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")
            orjson.loads(payload)

    return send, session.close


async def litellm_sender(target: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """`litellm.acompletion` against the simulator, retries off: the library's own cost."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    api_base = f"{target.rstrip('/')}/v1"

    async def send(i: int) -> None:
        response = await litellm.acompletion(
            model=f"openai/{MODEL}", api_base=api_base, api_key=API_KEY, num_retries=0,
            messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS,
        )
        litellm.completion_cost(completion_response=response)  # the pipeline prices every call too

    async def close() -> None:
        return None

    return send, close


async def proxy_sender(target: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """The same aiohttp POST as the floor, to LiteLLM Proxy instead of the simulator."""
    return await floor_sender(target, os.environ["BENCH_PROXY_KEY"])


async def pipeline_sender(target: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """Publish a CompletionRequest to Kafka and await its reply, through our own client."""
    from pipeline.client import PipelineClient
    from pipeline.contracts.models import CompletionRequest
    from pipeline.settings import Settings

    settings = Settings(kafka_bootstrap_servers=target)
    client = PipelineClient(settings)
    await client.start()
    run = os.getpid()

    async def send(i: int) -> None:
        request = CompletionRequest.model_validate({
            "request_id": f"bench-{run}-{i}", "task_type": "summarize", "tenant": "bench",
            "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
        })
        reply = await client.complete(request, timeout=120)
        if reply.status != "ok":
            raise RuntimeError(f"error reply: {reply.error}")

    return send, client.stop


SENDERS = {"floor": floor_sender, "litellm": litellm_sender, "proxy": proxy_sender, "pipeline": pipeline_sender}


class Window:
    """Counts only calls that *start* inside the measured window, so warm-up never leaks in."""

    def __init__(self) -> None:
        self.open = False
        self.latencies_ms: list[float] = []
        self.failed = 0
        self.first_error: str | None = None

    def record(self, started_in_window: bool, latency_ms: float | None, error: BaseException | None) -> None:
        if not started_in_window:
            return
        if error is None and latency_ms is not None:
            self.latencies_ms.append(latency_ms)
        else:
            self.failed += 1
            self.first_error = self.first_error or repr(error)[:300]


async def _timed(send: Send, i: int, start: float, window: Window) -> None:
    in_window = window.open
    try:
        await send(i)
    except Exception as exc:  # a failed call is counted, never fatal to the run
        window.record(in_window, None, exc)
        return
    window.record(in_window, (time.perf_counter() - start) * 1000, None)


async def closed_loop(send: Send, concurrency: int, warmup_s: float, duration_s: float) -> tuple[Window, float]:
    window, counter, stop_at = Window(), itertools.count(), [float("inf")]

    async def caller() -> None:
        while time.perf_counter() < stop_at[0]:
            await _timed(send, next(counter), time.perf_counter(), window)

    callers = [asyncio.create_task(caller()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    window.open = True
    print("MEASURE_START", flush=True)
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration_s
    await asyncio.sleep(duration_s)
    window.open = False
    wall = time.perf_counter() - t0
    print("MEASURE_END", flush=True)
    await asyncio.gather(*callers)
    return window, wall


async def open_loop(send: Send, rate: float, warmup_s: float, duration_s: float) -> tuple[Window, float]:
    window, tasks = Window(), set()
    t_start = time.perf_counter()
    total = int((warmup_s + duration_s) * rate)
    measure_from = int(warmup_s * rate)
    t0 = t_start + warmup_s
    for i in range(total):
        scheduled = t_start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i == measure_from:
            window.open = True
            print("MEASURE_START", flush=True)
        task = asyncio.create_task(_timed(send, i, scheduled, window))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.sleep(max(0.0, t0 + duration_s - time.perf_counter()))
    window.open = False
    wall = time.perf_counter() - t0
    await asyncio.gather(*tasks)  # late replies still count: their latency includes the wait
    print("MEASURE_END", flush=True)
    return window, wall


async def main(args: argparse.Namespace) -> None:
    send, close = await SENDERS[args.system](args.target)
    try:
        if args.rate:
            window, wall = await open_loop(send, args.rate, args.warmup, args.duration)
        else:
            window, wall = await closed_loop(send, args.concurrency, args.warmup, args.duration)
    finally:
        await close()
    print(orjson.dumps({
        "completed": len(window.latencies_ms), "failed": window.failed, "first_error": window.first_error,
        "wall_s": wall, "latencies_ms": sorted(round(x, 3) for x in window.latencies_ms),
    }).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(SENDERS), required=True)
    parser.add_argument("--target", required=True, help="simulator or proxy URL; Kafka bootstrap for pipeline")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int)
    load.add_argument("--rate", type=float, help="requests per second, open loop")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    # Every system runs on uvloop, as the pipeline's workers and LiteLLM Proxy (uvicorn) do.
    import uvloop

    uvloop.run(main(parser.parse_args()))
