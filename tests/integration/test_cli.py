"""The `pipeline` command end to end: send, run (config errors), report, demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from tests.integration.kafka_helpers import encode, eventually, produce, request_doc

pytestmark = pytest.mark.kafka
PIPELINE = [sys.executable, "-m", "pipeline.cli"]


def cli_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAFKA_", "CLICKHOUSE_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PIPELINE_TOPIC_REQUESTS": settings.topic_requests,
        "PIPELINE_TOPIC_REPLIES": settings.topic_replies,
        "PIPELINE_KAFKA_FETCH_MAX_WAIT_MS": "100",
        "PIPELINE_LOG_LEVEL": "WARNING",
        "PIPELINE_HTTP_PORT": "0",
        **extra,
    })
    return env


async def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    """Run the CLI in a child process without blocking the event loop the worker runs on."""
    proc = await asyncio.create_subprocess_exec(
        *PIPELINE, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_send_round_trips_and_exits_by_status(settings, start_worker, sim) -> None:
    await start_worker()
    env = cli_env(settings)
    code, out, err = await run_cli("send", "-t", "summarize", "-m", "Summarise: logs are tables.",
                                   "--tenant", "acme", "--request-id", "cli-1", "--set", "seed=7",
                                   "--set", "top_p=0.5", "--set", "n=2", "--set", 'stop=["END"]', env=env)
    assert code == 0, err
    reply = json.loads(out)
    assert reply["request_id"] == "cli-1" and reply["status"] == "ok" and reply["model"] == "sim-gpt-4o-mini"
    assert len(reply["choices"]) == 2  # --set n=2, as JSON
    (call,) = await sim.requests()
    assert {k: call["params"][k] for k in ("seed", "top_p", "n", "stop")} == {
        "seed": 7, "top_p": 0.5, "n": 2, "stop": ["END"]}

    code, out, err = await run_cli("send", "-m", "hi", "--model", "gpt-99", "--request-id", "cli-2", env=env)
    assert code == 1
    assert json.loads(out)["error"]["code"] == "unknown_model"


async def test_send_a_template_streamed(settings, start_worker) -> None:
    await start_worker()
    code, out, err = await run_cli("send", "-t", "summarize", "--template", "summarize-ticket",
                                   "--var", "ticket=Printer 7 is on fire", "--var", "language=French", "--stream",
                                   "--request-id", "cli-tpl", env=cli_env(settings))
    assert code == 0, err
    reply = json.loads(out)
    assert reply["status"] == "ok" and reply["stream_chunks"] > 0 and "Printer 7" in reply["content"]
    assert reply["content"] in err  # the streamed text was printed as it arrived
    code, out, err = await run_cli("send", "-t", "summarize", "--template", "summarize-ticket", "--var", "tickt",
                                   env=cli_env(settings))
    assert code == 2 and "expected NAME=VALUE" in err


async def test_send_from_file_and_timeout(settings, start_worker, tmp_path: Path) -> None:
    await start_worker()
    doc = request_doc("cli-file", "classify", tenant="globex")
    (tmp_path / "req.json").write_text(json.dumps(doc))
    code, out, err = await run_cli("send", "--file", str(tmp_path / "req.json"), env=cli_env(settings))
    assert code == 0, err
    assert json.loads(out)["model"] == "sim-llama"
    # Nobody consumes this requests topic: the client gives up with exit code 3, naming the request.
    from pipeline.transport.kafka import ensure_topics

    idle = settings.topic_requests + ".idle"
    await ensure_topics(settings, [idle], partitions=1)
    code, out, err = await run_cli("send", "-m", "hello?", "--request-id", "lonely", "--timeout", "2",
                                   env=cli_env(settings, PIPELINE_TOPIC_REQUESTS=idle))
    assert code == 3 and "lonely" in err


async def test_run_refuses_bad_config_naming_file_and_entry(settings, tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text("models:\n  a: {litellm_model: openai/gpt-4o-mini}\n")
    (tmp_path / "routing.yaml").write_text("routes:\n  summarize: {candidates: [a, ghost]}\n")
    code, _out, err = await run_cli("run", env=cli_env(settings, PIPELINE_CONFIG_DIR=str(tmp_path)), timeout=60)
    assert code == 2
    assert "routing.yaml" in err and "routes.summarize.candidates[1]" in err and "unknown model 'ghost'" in err


async def test_report_shows_cost_by_model_task_and_tenant(settings, start_worker) -> None:
    worker = await start_worker()
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"a", encode(request_doc("rep-1", "summarize", tenant="acme"))),
        (b"b", encode(request_doc("rep-2", "summarize", tenant="acme"))),
        (b"c", encode(request_doc("rep-3", "classify", tenant="globex"))),
    ])
    db = settings.clickhouse_database

    async def three_rows() -> bool:
        return (await worker.store.query(f"SELECT count() FROM {db}.llm_usage FINAL"))[0][0] == 3

    await eventually(three_rows)
    expected = await worker.store.query(
        f"SELECT sum(cost_usd) FROM {db}.llm_usage FINAL WHERE tenant = 'acme'"
    )
    # In-process: chDB allows one engine per process, and this test process already holds it.
    env = {"CLICKHOUSE_URL": settings.clickhouse_url, "CLICKHOUSE_DATABASE": db, "PIPELINE_LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(app, ["report", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_key = {(r["model"], r["task_type"], r["tenant"]): r for r in rows}
    assert set(by_key) == {("sim-gpt-4o-mini", "summarize", "acme"), ("sim-llama", "classify", "globex")}
    acme = by_key[("sim-gpt-4o-mini", "summarize", "acme")]
    assert acme["calls"] == 2 and acme["ok"] == 2 and acme["failed"] == 0
    assert acme["cost_usd"] == pytest.approx(float(expected[0][0]))
    csv_out = CliRunner().invoke(app, ["report", "--format", "csv"], env=env).output.splitlines()
    assert csv_out[0].startswith("model,task_type,tenant,calls") and len(csv_out) == 3


async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`pipeline demo` on its embedded broker, simulator and its own chDB directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAFKA_", "CLICKHOUSE_"))}
    code, out, err = await run_cli("demo", "--requests", "6", "--data-dir", str(tmp_path / "demo"), env=env,
                                   timeout=180)
    assert code == 0, out + err
    assert "demo done" in out and "Cost by model" in out and "schema_invalid" in out


async def test_models_shows_health_and_checks_every_deployment(settings, sim, tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        "  fine: {litellm_model: openai/gpt-4o-mini, api_base: '${PIPELINE_SIMULATOR_URL}/v1'}\n"
        "  locked: {litellm_model: anthropic/claude-haiku-4-5, api_base: '${PIPELINE_SIMULATOR_URL}'}\n")
    (tmp_path / "routing.yaml").write_text("default: {candidates: [fine]}\n")
    await sim.add_rule({"model": "claude-haiku-4-5", "fault": "auth"})
    env = cli_env(settings, PIPELINE_CONFIG_DIR=str(tmp_path),
                  PIPELINE_SIMULATOR_URL=os.environ["PIPELINE_SIMULATOR_URL"])
    code, out, err = await run_cli("models", "--check", env=env, timeout=60)
    assert code == 1, out + err  # one deployment failed its check
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "ok" in lines["fine"].split("│")[-2] and "ready" in lines["fine"]
    assert "auth_error" in lines["locked"]


async def test_check_reports_each_dependency(settings, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "models.yaml").write_text(
        "models:\n  sim: {litellm_model: openai/gpt-4o-mini, api_base: '${PIPELINE_SIMULATOR_URL}/v1'}\n")
    (cfg / "routing.yaml").write_text("default: {candidates: [sim]}\n")
    env = cli_env(settings, PIPELINE_CONFIG_DIR=str(cfg), CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}",
                  PIPELINE_SIMULATOR_URL=os.environ["PIPELINE_SIMULATOR_URL"])
    code, out, err = await run_cli("check", env=env, timeout=90)
    assert code == 0, out + err
    assert all(name in out for name in ("config", "kafka", "clickhouse", "redis", "provider openai"))
    code, out, _ = await run_cli("check", env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=90)
    assert code == 1 and "FAIL" in out
