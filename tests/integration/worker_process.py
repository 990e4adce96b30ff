"""Workers as child processes (`pipeline run`), as an orchestrator runs them: for crash, signal
and restart tests. Each keeps its log in a file, attached to any failed shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys


def worker_env(settings, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": redis_url,
        "PIPELINE_REDIS_NAMESPACE": f"test-{settings.consumer_group}",
        "PIPELINE_TOPIC_REQUESTS": settings.topic_requests,
        "PIPELINE_TOPIC_REPLIES": settings.topic_replies,
        "PIPELINE_TOPIC_USAGE": settings.topic_usage,
        "PIPELINE_TOPIC_DLQ": settings.topic_dlq,
        "PIPELINE_CONSUMER_GROUP": settings.consumer_group,
        "PIPELINE_CONFIG_DIR": str(settings.config_dir),
        "PIPELINE_KAFKA_FETCH_MAX_WAIT_MS": "100",
        "PIPELINE_MAX_IN_FLIGHT": "500",
        "PIPELINE_PARTITION_WINDOW": "200",
        "PIPELINE_IDEMPOTENCY_LEASE_S": "3",
        "PIPELINE_COMMIT_INTERVAL_S": "0.5",
        "PIPELINE_LOG_LEVEL": "WARNING",
        "PIPELINE_HTTP_PORT": "0",
        **extra,
    })
    return env


async def start_worker_process(env: dict[str, str], log_path) -> asyncio.subprocess.Process:
    """`pipeline run --no-sink` in a child process; its log goes to `log_path` for post-mortems."""
    # Opening a local log file is not a meaningful block of the event loop; the child keeps its own descriptor.
    with open(log_path, "ab") as log:  # noqa: ASYNC230 -- see above
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli", "run", "--no-sink", env=env, stdout=log, stderr=log,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def log_tail(proc: asyncio.subprocess.Process, lines: int = 80) -> str:
    with open(proc.log_path, "rb") as f:  # type: ignore[attr-defined]
        return b"".join(f.readlines()[-lines:]).decode(errors="replace")


async def terminate(proc: asyncio.subprocess.Process, *, timeout_s: float = 30) -> None:
    """SIGTERM and wait for a clean exit (0). A worker that does not stop in time is dumped (py-spy:
    where every thread is) and killed; either failure carries the end of the worker's log, which
    names any task that would not stop, so a shutdown problem is diagnosable from CI."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        dump = await asyncio.create_subprocess_exec(spy, "dump", "--pid", str(proc.pid), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        stacks, _ = await asyncio.wait_for(dump.communicate(), 60)
        proc.kill()
        await proc.wait()
        raise AssertionError(f"worker {proc.pid} did not stop within {timeout_s:g} s of SIGTERM; its threads:\n"
                             + stacks.decode(errors="replace") + "\nits log:\n" + log_tail(proc)) from None
    assert code == 0, f"worker {proc.pid} exited {code} after SIGTERM; its log:\n{log_tail(proc)}"
