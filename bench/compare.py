"""The pipeline against the floor, LiteLLM alone and LiteLLM Proxy, side by side, in one run.

    bash scripts/bench.sh                     # sets up the proxy venv, then runs this
    .venv/bin/python bench/compare.py [--duration 10] [--concurrency 64] [--slow-latency-ms 500]
                                      [--slow-concurrency 256] [--out bench/results]

Every system calls the same provider simulator (its own process, fixed latency) with the same
prompt, at the same concurrency, on this machine, in one invocation:

  floor     a plain aiohttp POST straight to the simulator
  litellm   litellm.acompletion in a loop (plus completion_cost, as the pipeline prices each call)
  pipeline  CompletionRequest -> Apache Kafka -> `pipeline run` worker(s) (routing, budgets and
            idempotency in Redis, usage events) -> reply on Kafka; `pipeline sink` writes the
            usage rows to ClickHouse (chDB) in its own process
  proxy     LiteLLM Proxy (`litellm --config`), driven over HTTP like the floor

Phases: saturation (closed loop) at 0 ms provider latency for every system and for 2 pipeline
workers; latency (open loop) for every system at half of one pipeline worker's saturation
throughput; saturation again at the slow latency. CPU is read from /proc for the system's own
processes (for floor and litellm, the load generator is the system); the Kafka broker's and
Redis's CPU are reported apart as infrastructure. Prints a table, writes results.json and a
latency plot (PNG). Nothing here asserts a time: it measures and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.markup import escape

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROXY_VENV = Path(os.environ.get("PIPELINE_BENCH_PROXY_VENV", REPO / ".venv-proxy"))


# --------------------------------------------------------------------------- measurement

def _tree(pids: list[int]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return procs


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for proc in _tree(pids):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mib(pids: list[int]) -> float:
    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class PhaseResult:
    system: str
    phase: str  # "saturation" | "latency"
    provider_latency_ms: float
    load: str  # "closed:64" | "open:120/s"
    completed: int
    failed: int
    wall_s: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_s: float
    cpu_s_per_1k: float
    infra_cpu_s_per_1k: float
    peak_rss_mib: float
    first_error: str | None = None
    cpu_s_per_1k_by_process: dict[str, float] = field(default_factory=dict)
    peak_rss_mib_by_process: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0  # share of all cores busy during the window (everything on the box)
    steal_s: float = 0.0  # CPU time the hypervisor took from this VM during the window (noise)
    percentiles_ms: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g}s")


class Stack:
    """Every process of the run; stopped in reverse order whatever happens."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.closers: list[Any] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # The child inherits its own copy of the descriptor, so ours can be closed once it is spawned.
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop_proc(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop_proc(proc)
        for closer in reversed(self.closers):
            closer()


def proxy_config(path: Path, simulator_url: str) -> None:
    import yaml

    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": f"{simulator_url}/v1", "api_key": "sk-bench-not-a-secret"}}],
        "litellm_settings": {"num_retries": 0, "request_timeout": 120, "set_verbose": False},
        "general_settings": {},
    }))


# --------------------------------------------------------------------------- the run

class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack, progress: Any) -> None:
        self.args = args
        self.stack = stack
        self.progress = progress
        self.results: list[PhaseResult] = []
        self.targets: dict[str, str] = {}
        self.system_pids: dict[str, list[int]] = {}
        self.infra_pids: list[int] = []
        self.roles: dict[int, str] = {}  # pid -> "worker0", "sink", "proxy"
        self.base_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}

    # ---- set-up
    def start_simulator(self) -> None:
        port = free_port()
        proc = self.stack.spawn("simulator", [sys.executable, "-m", "pipeline.cli", "simulate", "--port", str(port),
                                              "--latency-ms", "0"], self.base_env)
        self.simulator_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.simulator_url}/health", 60, proc)
        self.targets["floor"] = self.targets["litellm"] = self.simulator_url
        self.system_pids["floor"] = self.system_pids["litellm"] = []  # the driver itself

    def start_proxy(self) -> None:
        litellm_bin = PROXY_VENV / "bin" / "litellm"
        if not litellm_bin.exists():
            self.proxy_missing = f"{litellm_bin} not found (run scripts/bench.sh, which creates it)"
            return
        config = self.stack.work / "proxy.yaml"
        proxy_config(config, self.simulator_url)
        port = free_port()
        # The proxy refuses to start unauthenticated; a real deployment checks a key on every call too.
        self.base_env["BENCH_PROXY_KEY"] = f"sk-{secrets.token_hex(32)}"
        env = {**self.base_env, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION",
               "LITELLM_MASTER_KEY": self.base_env["BENCH_PROXY_KEY"]}
        for key in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST"):
            env.pop(key, None)
        proc = self.stack.spawn("proxy", [str(litellm_bin), "--config", str(config), "--host", "127.0.0.1",
                                          "--port", str(port), "--num_workers", "1"], env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/liveliness", 180, proc)
        self.targets["proxy"] = url
        self.system_pids["proxy"] = [proc.pid]
        self.roles[proc.pid] = "proxy"

    def start_pipeline(self) -> None:
        from pipeline.local.apache_kafka import ApacheKafka
        from pipeline.local.redis_server import RedisServer
        from pipeline.transport.kafka import ensure_topics

        kafka = ApacheKafka()
        kafka.start()
        self.stack.closers.append(kafka.stop)
        redis = RedisServer(self.stack.work / "redis")
        redis.start()
        self.stack.closers.append(redis.stop)
        self.infra_pids = [p for p in (_pid_of(kafka), _pid_of(redis)) if p]
        run = f"bench{int(time.time())}"
        # A fresh broker per run, so the default topic names (which the driver's client uses) are free.
        topics = ["llm.requests", "llm.replies", "llm.usage", "llm.requests.dlq", "llm.usage.dlq", "llm.alerts"]
        asyncio.run(ensure_topics({"bootstrap_servers": kafka.bootstrap_servers}, topics,
                                  partitions=self.args.partitions))
        self.pipeline_env = {
            **self.base_env, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "REDIS_URL": redis.url, "CLICKHOUSE_URL": f"chdb://{self.stack.work / 'chdb'}",
            "PIPELINE_SIMULATOR_URL": self.simulator_url, "PIPELINE_CONFIG_DIR": str(REPO / "config"),
            "PIPELINE_CONSUMER_GROUP": f"{run}-workers", "PIPELINE_USAGE_CONSUMER_GROUP": f"{run}-sink",
            "PIPELINE_LOG_LEVEL": "WARNING", "PIPELINE_HTTP_PORT": "0",
        }
        self.bootstrap = kafka.bootstrap_servers
        sink = self.stack.spawn("sink", [sys.executable, "-m", "pipeline.cli", "sink"], self.pipeline_env)
        self.sink_pid = sink.pid
        self.roles[sink.pid] = "sink"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.set_workers(1)

    def set_workers(self, n: int, variant: str = "", extra_env: dict[str, str] | None = None) -> None:
        """Scale the worker group to n; a variant (extra env) restarts every worker with it."""
        if variant != getattr(self, "_variant", ""):
            while self.workers:
                self.stack.stop_proc(self.workers.pop())
            self._variant = variant
        env = {**self.pipeline_env, **(extra_env or {})}
        if "PYTHONPATH" in (extra_env or {}):
            # Another tree's `pipeline` (an A/B "before"): `python -m` would put the working directory,
            # this repo, ahead of PYTHONPATH and run this tree's code under the variant's name.
            env["PYTHONSAFEPATH"] = "1"
        while len(self.workers) < n:
            idx = len(self.workers)
            self.workers.append(self.stack.spawn(f"worker{idx}{variant}", [sys.executable, "-m", "pipeline.cli", "run",
                                                                           "--no-sink"], env))
            self.roles[self.workers[-1].pid] = f"worker{idx}"
        while len(self.workers) > n:
            self.stack.stop_proc(self.workers.pop())
        asyncio.run(wait_group(self.bootstrap, self.pipeline_env["PIPELINE_CONSUMER_GROUP"], n, self.args.partitions))
        pids = [w.pid for w in self.workers] + [self.sink_pid]
        name = ("pipeline" if n == 1 else f"pipeline x{n}") + (f" [{variant}]" if variant else "")
        self.targets[name] = self.bootstrap
        self.system_pids[name] = pids

    def set_provider_latency(self, latency_ms: float) -> None:
        from pipeline.simulator import SyncSimulatorClient

        SyncSimulatorClient(self.simulator_url).configure(latency_ms=latency_ms)

    # ---- one phase
    def phase(self, system: str, phase: str, provider_latency_ms: float, *, concurrency: int | None = None,
              rate: float | None = None) -> PhaseResult:
        driver_system = "pipeline" if system.startswith("pipeline") else system
        load = ["--concurrency", str(concurrency)] if concurrency else ["--rate", f"{rate:.3f}"]
        argv = [sys.executable, str(REPO / "bench" / "driver.py"), "--system", driver_system,
                "--target", self.targets[system], *load, "--duration", str(self.args.duration),
                "--warmup", str(self.args.warmup)]
        label = f"{system:<12} {phase:<10} {provider_latency_ms:>4g} ms  " + (
            f"closed {concurrency}" if concurrency else f"open {rate:.0f}/s")
        task = self.progress.add_task(label, total=self.args.warmup + self.args.duration)
        driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.base_env, cwd=REPO)
        pids = self.system_pids[system] or [driver.pid]
        profiler: subprocess.Popen[bytes] | None = None
        sink_profiler: subprocess.Popen[bytes] | None = None
        measured: dict[str, float] = {}
        t_begin = time.monotonic()
        peak = 0.0
        peaks: dict[str, float] = {}
        assert driver.stdout is not None
        os.set_blocking(driver.stdout.fileno(), False)
        buffer = b""
        while True:
            chunk = driver.stdout.read() or b""
            buffer += chunk
            if b"MEASURE_START" in buffer and "start" not in measured:
                per_start = {self.roles.get(pid, "driver"): cpu_seconds([pid]) for pid in pids}
                measured["start"] = sum(per_start.values())
                psutil.cpu_percent(interval=None)  # starts the machine-wide window
                steal_start = getattr(psutil.cpu_times(), "steal", 0.0)
                measured["infra_start"] = cpu_seconds(self.infra_pids) if system.startswith("pipeline") else 0.0
                profiler = self.start_profiler(system, phase, provider_latency_ms, pids[0])
                if system == "pipeline" and "sink" in self.args.profile:
                    sink_profiler = self.start_profiler("sink", phase, provider_latency_ms, self.sink_pid)
            if "start" in measured and "end" not in measured:
                sample = {self.roles.get(pid, "driver"): rss_mib([pid]) for pid in pids}  # one read per process
                peak = max(peak, sum(sample.values()))
                for role, mib in sample.items():
                    peaks[role] = max(peaks.get(role, 0.0), mib)
            if b"MEASURE_END" in buffer and "end" not in measured:
                per_end = {self.roles.get(pid, "driver"): cpu_seconds([pid]) for pid in pids}
                measured["end"] = sum(per_end.values())
                machine_busy = psutil.cpu_percent(interval=None) / 100
                steal = getattr(psutil.cpu_times(), "steal", 0.0) - steal_start
                measured["infra_end"] = cpu_seconds(self.infra_pids) if system.startswith("pipeline") else 0.0
            self.progress.update(task, completed=min(time.monotonic() - t_begin, self.args.warmup + self.args.duration))
            if driver.poll() is not None:
                buffer += driver.stdout.read() or b""
                break
            time.sleep(0.25)
        self.progress.remove_task(task)
        for running in (profiler, sink_profiler):
            if running is not None:
                running.wait()
        if driver.returncode != 0 or "end" not in measured:
            raise RuntimeError(f"driver for {system} failed: {driver.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        data = json.loads(buffer.splitlines()[-1])
        latencies = data["latencies_ms"]
        completed = data["completed"]
        cpu = measured["end"] - measured["start"]
        infra = measured["infra_end"] - measured["infra_start"]
        result = PhaseResult(
            system=system, phase=phase, provider_latency_ms=provider_latency_ms,
            load=f"closed:{concurrency}" if concurrency else f"open:{rate:.1f}/s",
            completed=completed, failed=data["failed"], wall_s=data["wall_s"],
            throughput_rps=completed / data["wall_s"],
            p50_ms=percentile(latencies, 50), p90_ms=percentile(latencies, 90), p99_ms=percentile(latencies, 99),
            cpu_s=cpu, cpu_s_per_1k=cpu / max(completed, 1) * 1000, infra_cpu_s_per_1k=infra / max(completed, 1) * 1000,
            peak_rss_mib=peak, first_error=data["first_error"],
            machine_busy=machine_busy, peak_rss_mib_by_process=peaks, steal_s=steal,
            cpu_s_per_1k_by_process={role: (per_end[role] - per_start[role]) / max(completed, 1) * 1000
                                     for role in per_end},
            percentiles_ms={str(q): percentile(latencies, q) for q in (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)},
        )
        self.results.append(result)
        self.progress.console.print(
            f"  {escape(label)}: {result.throughput_rps:8.1f} req/s  p50 {result.p50_ms:7.2f} ms"
            f"  p99 {result.p99_ms:8.2f} ms"
            f"  cpu {result.cpu_s_per_1k:6.2f} s/1k "
            + (f"({', '.join(f'{k} {v:.2f}' for k, v in result.cpu_s_per_1k_by_process.items())}) "
               if len(result.cpu_s_per_1k_by_process) > 1 else "")
            + f" rss {peak:6.0f} MiB "
            + (f"({', '.join(f'{k} {v:.0f}' for k, v in peaks.items())}) " if len(peaks) > 1 else "")
            + f" machine {machine_busy:4.0%} busy, steal {steal:.1f} s"
            + (f"  failed {result.failed}" if result.failed else ""))
        return result

    def start_profiler(self, system: str, phase: str, latency: float, pid: int) -> subprocess.Popen[bytes] | None:
        """py-spy over the measured window of one process: a flame graph SVG and collapsed stacks."""
        if system not in self.args.profile or phase != "saturation" or latency != 0:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        stem = self.args.out / f"profile-{system.replace(' ', '')}"
        common = ["-p", str(pid), "-d", str(int(self.args.duration)), "-r", "200", "--nonblocking"]
        subprocess.Popen([py_spy, "record", *common, "-f", "raw", "-o", f"{stem}.txt"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return subprocess.Popen([py_spy, "record", *common, "-f", "flamegraph", "-o", f"{stem}.svg"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # ---- the whole run
    def run(self) -> None:
        a = self.args
        systems = [s for s in ("floor", "litellm", "pipeline", "proxy") if s in a.systems]
        if self.proxy_missing and "proxy" in systems:
            systems.remove("proxy")
        self.set_provider_latency(0)
        sat = {s: self.phase(s, "saturation", 0, concurrency=a.concurrency) for s in systems}
        pace = sat.get("pipeline") or next(iter(sat.values()))
        rate = a.rate or pace.throughput_rps / 2
        for s in systems:
            self.phase(s, "latency", 0, rate=rate)
        for s in systems:  # a system that saturates below 2x the common rate: also at half its own
            if s != "floor" and sat[s].throughput_rps < 1.8 * rate:
                self.phase(s, "latency (own half)", 0, rate=sat[s].throughput_rps / 2)
        if "pipeline" in systems and a.workers >= 2:
            self.set_workers(a.workers)
            self.phase(f"pipeline x{a.workers}", "saturation", 0, concurrency=a.concurrency)
            self.set_workers(1)
        if "pipeline" in systems:
            for variant in a.variant:  # the same worker under other settings, in this same run
                name, _, assignments = variant.partition(":")
                extra = dict(kv.split("=", 1) for kv in assignments.split(",") if kv)
                self.set_workers(1, name, extra)
                self.phase(f"pipeline [{name}]", "saturation", 0, concurrency=a.concurrency)
            if a.variant:
                self.set_workers(1)
        if a.slow_latency_ms <= 0:
            return
        self.set_provider_latency(a.slow_latency_ms)
        for s in systems:
            self.phase(s, "saturation", a.slow_latency_ms, concurrency=a.slow_concurrency)


def _pid_of(service: Any) -> int | None:
    proc = getattr(service, "_proc", None)
    return proc.pid if proc is not None else None


async def wait_group(bootstrap: str, group: str, members: int, partitions: int, timeout_s: float = 120) -> None:
    """Until the worker group is stable with `members` members sharing every partition."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                state, got = _group_state(await admin.describe_consumer_groups([group]))
            except KafkaError:  # the coordinator is still being elected on a fresh broker
                state, got = "", 0
            if state == "Stable" and got == members:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"group {group} did not reach {members} stable members")
    finally:
        await admin.close()


def _group_state(described: Any) -> tuple[str, int]:
    for response in described:
        for group in getattr(response, "groups", []):
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            return str(group[2]), len(group[5])
    return "", 0


# --------------------------------------------------------------------------- report

def machine() -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    from importlib.metadata import version

    return {"cpu": cpu_model, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "litellm": version("litellm"),
            "faststream": version("faststream"), "aiokafka": version("aiokafka")}


def summarise(results: list[PhaseResult], args: argparse.Namespace) -> dict[str, Any]:
    def get(system: str, phase: str, latency: float) -> PhaseResult | None:
        return next((r for r in results
                     if r.system == system and r.phase == phase and r.provider_latency_ms == latency), None)

    sat = {r.system: r for r in results if r.phase == "saturation" and r.provider_latency_ms == 0}
    lat = {r.system: r for r in results if r.phase == "latency"}
    floor_lat = lat.get("floor")
    for r in lat.values():
        if floor_lat:
            r.percentiles_ms["added_p50"] = r.p50_ms - floor_lat.p50_ms
            r.percentiles_ms["added_p99"] = r.p99_ms - floor_lat.p99_ms
    pipe, lite, proxy = sat.get("pipeline"), sat.get("litellm"), sat.get("proxy")
    pipe2 = sat.get("pipeline x2")
    slow = get("pipeline", "saturation", args.slow_latency_ms)
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, limit: str, ok: bool | None) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "met": ok})

    if pipe and lite:
        ratio = pipe.cpu_s_per_1k / lite.cpu_s_per_1k
        target("pipeline CPU per request / LiteLLM alone", round(ratio, 3), "<= 1.25", ratio <= 1.25)
    if "pipeline" in lat and floor_lat:
        added50 = lat["pipeline"].p50_ms - floor_lat.p50_ms
        added99 = lat["pipeline"].p99_ms - floor_lat.p99_ms
        target("added latency p50 at half saturation (ms)", round(added50, 2), "< 5", added50 < 5)
        target("added latency p99 at half saturation (ms)", round(added99, 2), "< 25", added99 < 25)
    if pipe and slow and args.slow_latency_ms > 0:
        ratio = slow.throughput_rps / pipe.throughput_rps
        target(f"1 worker at {args.slow_latency_ms:g} ms / at 0 ms throughput", round(ratio, 3), ">= 0.90",
               ratio >= 0.9)
    if pipe and pipe2:
        ratio = pipe2.throughput_rps / pipe.throughput_rps
        target("2 workers / 1 worker throughput", round(ratio, 3), ">= 1.80", ratio >= 1.8)
    if pipe and proxy:
        per_cpu_ratio = proxy.cpu_s_per_1k / pipe.cpu_s_per_1k
        target("requests per CPU second, pipeline / proxy", round(per_cpu_ratio, 3), "> 1", per_cpu_ratio > 1)
        if "proxy" in lat and floor_lat:
            added_pipe = lat["pipeline"].p50_ms - floor_lat.p50_ms
            added_proxy = lat["proxy"].p50_ms - floor_lat.p50_ms
            target("added p50 latency at the same load, pipeline - proxy (ms)", round(added_pipe - added_proxy, 2),
                   "< 0", added_pipe < added_proxy)
        own = next((r for r in results if r.system == "proxy" and r.phase == "latency (own half)"), None)
        if own and "pipeline" in lat and floor_lat:
            diff = (lat["pipeline"].p50_ms - floor_lat.p50_ms) - (own.p50_ms - floor_lat.p50_ms)
            target("added p50 latency, each at half its own saturation, pipeline - proxy (ms)", round(diff, 2),
                   "< 0", diff < 0)
    return {"targets": targets}


def print_report(console: Any, results: list[PhaseResult], summary: dict[str, Any], env: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"\nMachine: {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB; Python {env['python']}, "
                  f"LiteLLM {env['litellm']}")
    floor_sat = {r.provider_latency_ms: r for r in results if r.system == "floor" and r.phase == "saturation"}
    lite_sat = {r.provider_latency_ms: r for r in results if r.system == "litellm" and r.phase == "saturation"}
    floor_lat = next((r for r in results if r.system == "floor" and r.phase == "latency"), None)
    lite_lat = next((r for r in results if r.system == "litellm" and r.phase == "latency"), None)
    table = Table(title="Saturation (closed loop) and latency (open loop at half of 1 pipeline worker's saturation)")
    for col in ("system", "phase", "provider", "load", "req/s", "x floor", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
                "+p50 vs litellm", "CPU s/1k", "x litellm", "infra CPU s/1k", "peak RSS MiB", "machine busy", "failed"):
        table.add_column(col, justify="left" if col in ("system", "phase", "load") else "right")
    for r in results:
        floor = floor_sat.get(r.provider_latency_ms)
        lite = lite_sat.get(r.provider_latency_ms)
        added = r.phase.startswith("latency") and floor_lat is not None
        table.add_row(
            escape(r.system), r.phase, f"{r.provider_latency_ms:g} ms", r.load, f"{r.throughput_rps:.1f}",
            f"{r.throughput_rps / floor.throughput_rps:.2f}" if floor and r.phase == "saturation" else "",
            f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
            f"{r.p50_ms - floor_lat.p50_ms:+.2f}" if added and floor_lat else "",
            f"{r.p99_ms - floor_lat.p99_ms:+.2f}" if added and floor_lat else "",
            f"{r.p50_ms - lite_lat.p50_ms:+.2f}" if r.phase.startswith("latency") and lite_lat else "",
            f"{r.cpu_s_per_1k:.2f}", f"{r.cpu_s_per_1k / lite.cpu_s_per_1k:.2f}" if lite else "",
            f"{r.infra_cpu_s_per_1k:.2f}" if r.system.startswith("pipeline") else "",
            f"{r.peak_rss_mib:.0f}", f"{r.machine_busy:.0%}", str(r.failed))
    console.print(table)
    targets = Table(title="Targets")
    for col in ("target", "value", "limit", "met"):
        targets.add_column(col)
    for t in summary["targets"]:
        targets.add_row(t["target"], str(t["value"]), t["limit"], "yes" if t["met"] else "NO")
    console.print(targets)


def plot(results: list[PhaseResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [r for r in results if r.phase.startswith("latency")]
    qs = ["50", "75", "90", "95", "99", "99.9"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in series:
        label = r.system + (f" ({r.load}, half its own saturation)" if r.phase != "latency" else "")
        ax.plot(qs, [r.percentiles_ms[q] for q in qs], marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("end-to-end latency (ms, log)")
    rate = series[0].load.removeprefix("open:") if series else ""
    ax.set_title(f"End-to-end latency, open loop at {rate} (half of 1 pipeline worker's saturation), provider 0 ms",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each phase")
    parser.add_argument("--concurrency", type=int, default=64, help="callers in the 0 ms saturation phases")
    parser.add_argument("--slow-latency-ms", type=float, default=500.0)
    parser.add_argument("--slow-concurrency", type=int, default=256, help="callers in the slow saturation phases")
    parser.add_argument("--rate", type=float, default=None, help="open-loop rate (default: half of pipeline's)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--systems", type=lambda v: v.split(","), default=["floor", "litellm", "pipeline", "proxy"],
                        help="comma list of floor,litellm,pipeline,proxy")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VAL,...",
                        help="also run 1 worker at saturation with extra env, e.g. asyncio:PIPELINE_EVENT_LOOP=asyncio")
    parser.add_argument("--workers", type=int, default=2, help="pipeline workers in the scaling phase (<2: skip)")
    parser.add_argument("--profile", type=lambda v: v.split(","), default=[],
                        help="systems to profile with py-spy during 0 ms saturation, e.g. pipeline,litellm,sink")
    args = parser.parse_args()

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(width=None if sys.stdout.isatty() else 180)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    stack = Stack(work)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console)
    bench = Bench(args, stack, progress)
    try:
        with progress:
            setup = progress.add_task("starting simulator, Kafka, Redis, worker, sink, LiteLLM Proxy", total=None)
            bench.start_simulator()
            bench.proxy_missing = None
            if "pipeline" in args.systems:
                bench.start_pipeline()
            if "proxy" in args.systems:
                bench.start_proxy()
            progress.remove_task(setup)
            if bench.proxy_missing:
                console.print(f"[yellow]proxy skipped: {bench.proxy_missing}[/]")
            bench.run()
    finally:
        stack.close()
    env = machine()
    summary = summarise(bench.results, args)
    print_report(console, bench.results, summary, env)
    (args.out / "results.json").write_text(json.dumps({
        "machine": env, "args": {k: str(v) for k, v in vars(args).items()}, **summary,
        "results": [{**asdict(r)} for r in bench.results]}, indent=2))
    plot(bench.results, args.out / "latency.png")
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'latency.png'}; logs in {work}")
    if not os.environ.get("PIPELINE_BENCH_KEEP_LOGS"):
        shutil.rmtree(work / "chdb", ignore_errors=True)


if __name__ == "__main__":
    main()
