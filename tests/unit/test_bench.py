"""The benchmark harness's own logic: its load generator against the simulator, and its target arithmetic.

No figure is asserted: these only keep the harness from rotting between benchmark runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import compare  # noqa: E402


def test_percentile_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert compare.percentile(values, 50) == 51.0
    assert compare.percentile(values, 99) == 99.0
    assert compare.percentile([7.0], 99.9) == 7.0


def _result(system: str, phase: str, rps: float, cpu: float, p50: float = 10.0, latency: float = 0.0):
    return compare.PhaseResult(system=system, phase=phase, provider_latency_ms=latency, load="x", completed=100,
                               failed=0, wall_s=1.0, throughput_rps=rps, p50_ms=p50, p90_ms=p50, p99_ms=p50 * 2,
                               cpu_s=0.0, cpu_s_per_1k=cpu, infra_cpu_s_per_1k=0.0, peak_rss_mib=1.0)


def test_targets_are_ratios_of_phases_of_the_same_run() -> None:
    results = [
        _result("litellm", "saturation", 100, 8.0), _result("pipeline", "saturation", 80, 9.6),
        _result("proxy", "saturation", 40, 20.0), _result("pipeline x2", "saturation", 140, 9.8),
        _result("floor", "latency", 40, 1.0, p50=2.0), _result("pipeline", "latency", 40, 10.0, p50=6.0),
        _result("proxy", "latency", 40, 20.0, p50=9.0),
        _result("pipeline", "saturation", 76, 9.0, latency=500.0),
    ]
    args = argparse.Namespace(slow_latency_ms=500.0)
    targets = {t["target"]: t for t in compare.summarise(results, args)["targets"]}
    assert targets["pipeline CPU per request / LiteLLM alone"]["value"] == 1.2
    assert targets["pipeline CPU per request / LiteLLM alone"]["met"] is True
    assert targets["added latency p50 at half saturation (ms)"]["value"] == 4.0
    assert targets["2 workers / 1 worker throughput"]["value"] == 1.75
    assert targets["2 workers / 1 worker throughput"]["met"] is False
    assert targets["1 worker at 500 ms / at 0 ms throughput"]["value"] == 0.95
    assert targets["added p50 latency at the same load, pipeline - proxy (ms)"]["value"] == -3.0


@pytest.mark.timeout(120)
async def test_driver_measures_a_window_against_the_simulator(simulator) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "driver.py"), "--system", "floor", "--target", simulator.url,
        "--concurrency", "4", "--duration", "1", "--warmup", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    out = stdout.decode().splitlines()
    assert out[:2] == ["MEASURE_START", "MEASURE_END"]
    data = json.loads(out[-1])
    assert data["failed"] == 0 and data["completed"] == len(data["latencies_ms"]) > 0
    assert data["latencies_ms"] == sorted(data["latencies_ms"])
