"""Secrets by reference, end to end: keys read at call time (rotation without a restart), and no
secret value (provider keys, the Redis and ClickHouse passwords) in any output of the pipeline."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest, ErrorCode
from tests.conftest import REDIS_TEST_PASSWORD
from tests.integration.kafka_helpers import eventually, read_topic
from tests.integration.test_cli import cli_env, run_cli

pytestmark = pytest.mark.kafka

FILE_KEY = "sk-file-LEAKCHECK-a1b2c3d4e5"
DIR_KEY = "sk-dir-LEAKCHECK-f6e7d8c9b0"
CLICKHOUSE_PASSWORD = "ch-pw-LEAKCHECK-5e6f"
SECRETS = (FILE_KEY, DIR_KEY, REDIS_TEST_PASSWORD, CLICKHOUSE_PASSWORD)
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _config(tmp_path: Path, key_file: Path) -> Path:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    base = os.environ["PIPELINE_SIMULATOR_URL"]
    (cfg / "models.yaml").write_text(
        "models:\n"
        f"  keyed-file: {{litellm_model: openai/keyed-file-model, api_base: '{base}/v1',"
        f" api_key_file: '{key_file}', price: {PRICE}}}\n"
        f"  keyed-dir: {{litellm_model: openai/keyed-dir-model, api_base: '{base}/v1',"
        f" api_key: '{{sim_key}}', price: {PRICE}}}\n"
        f"  keyed-ghost: {{litellm_model: openai/keyed-ghost-model, api_base: '{base}/v1',"
        f" api_key: '{{ghost}}', price: {PRICE}}}\n")
    (cfg / "routing.yaml").write_text("default: {candidates: [keyed-file]}\n")
    return cfg


@pytest.fixture
async def keyed_sim(sim):
    """The simulator checking keys of the keyed-* models (by digest); unchecked again afterwards."""
    await sim.configure(api_keys={"keyed-file-model": [_digest(FILE_KEY)], "keyed-dir-model": [_digest(DIR_KEY)]})
    yield sim
    await sim.configure(api_keys={})


def _ask(request_id: str, model: str) -> CompletionRequest:
    return CompletionRequest(request_id=request_id, task_type="summarize", model=model, cache=False,
                             messages=[{"role": "user", "content": "Summarise: keys rotate."}])


async def test_a_rotated_key_file_is_used_without_a_restart(settings, start_worker, keyed_sim, tmp_path) -> None:
    key_file = tmp_path / "openai"
    key_file.write_text(FILE_KEY + "\n")  # as `kubectl create secret` / `echo` leave it
    from pipeline.catalog import load_catalog

    await start_worker(catalog=load_catalog(_config(tmp_path, key_file)))
    rotated = "sk-rotated-LEAKCHECK-0000"
    async with PipelineClient(settings) as client:
        first = await client.complete(_ask("rot-1", "keyed-file"), timeout=30)
        key_file.write_text(rotated + "\n")  # the secret is rotated: the simulator now wants the new key
        await keyed_sim.configure(api_keys={"keyed-file-model": [_digest(rotated)]})
        second = await client.complete(_ask("rot-2", "keyed-file"), timeout=30)
    assert (first.status, second.status) == ("ok", "ok"), (first.error, second.error)
    calls = [c for c in await keyed_sim.requests() if c["model"] == "keyed-file-model"]
    assert [c["auth"] for c in calls] == ["passed", "passed"]  # each call carried the key in force


async def test_no_secret_reaches_logs_replies_dead_letters_usage_metrics_or_check(
    settings, start_worker, keyed_sim, redis_auth, json_logs, tmp_path,
) -> None:
    from pipeline.catalog import load_catalog

    key_file = tmp_path / "openai"
    key_file.write_text(FILE_KEY + "\n")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "sim_key").write_text(DIR_KEY + "\n")
    cfg = _config(tmp_path, key_file)
    worker = await start_worker(
        catalog=load_catalog(cfg), secrets_dir=secrets_dir, redis_url=redis_auth.url,
        redis_namespace=f"leak-{settings.consumer_group}", response_cache="redis",
        clickhouse_password=SecretStr(CLICKHOUSE_PASSWORD))
    replies = {}
    async with PipelineClient(settings) as client:
        replies["ok-file"] = await client.complete(_ask("ok-file", "keyed-file"), timeout=30)
        replies["ok-dir"] = await client.complete(_ask("ok-dir", "keyed-dir"), timeout=30)
        await keyed_sim.add_rule({"model": "keyed-file-model", "fault": "auth"})
        replies["auth-fault"] = await client.complete(_ask("auth-fault", "keyed-file"), timeout=30)
        await keyed_sim.clear_rules()
        replies["missing-secret"] = await client.complete(_ask("missing-secret", "keyed-ghost"), timeout=30)
        replies["unknown-model"] = await client.complete(_ask("unknown-model", "ghost-model"), timeout=30)
        invalid = {"request_id": "schema-bad", "task_type": "summarize", "messages": [], "temperature": "hot"}
        waiter = await client.publish_raw(json.dumps(invalid).encode(), expect_request_id="schema-bad")
        replies["schema-bad"] = await asyncio.wait_for(waiter, 30)
        await client.publish_raw(b"{not json")
    assert {rid: r.status for rid, r in replies.items()} == {
        "ok-file": "ok", "ok-dir": "ok", "auth-fault": "error", "missing-secret": "error",
        "unknown-model": "error", "schema-bad": "error"}
    assert replies["auth-fault"].error.code == ErrorCode.AUTH_ERROR  # the simulator's 401, classified
    assert "secret 'ghost' not found" in replies["missing-secret"].error.message  # named, by name only
    calls = {c["model"]: c for c in await keyed_sim.requests()}
    assert calls["keyed-file-model"]["auth"] == "passed" and calls["keyed-dir-model"]["auth"] == "passed"
    assert "keyed-ghost-model" not in calls  # a key that does not resolve is never sent

    db = settings.clickhouse_database
    rows = await eventually(lambda: worker.store.query(
        f"SELECT * FROM {db}.llm_usage FINAL WHERE (SELECT count() FROM {db}.llm_usage FINAL) >= 4"), timeout_s=30)
    bootstrap = settings.kafka_bootstrap_servers
    reply_records = await read_topic(bootstrap, settings.topic_replies, count=None, timeout_s=30)
    usage_records = await read_topic(bootstrap, settings.topic_usage, count=None, timeout_s=30)
    dead = await read_topic(bootstrap, settings.topic_dlq, count=2, timeout_s=30)
    async with httpx.AsyncClient() as http:
        metrics_text = (await http.get(f"http://127.0.0.1:{worker.http.port}/metrics")).text
    await worker.stop()

    env = cli_env(settings, PIPELINE_CONFIG_DIR=str(cfg), PIPELINE_SECRETS_DIR=str(secrets_dir),
                  REDIS_URL=redis_auth.url, CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}",
                  CLICKHOUSE_PASSWORD=CLICKHOUSE_PASSWORD, PIPELINE_LOG_LEVEL="DEBUG",
                  PIPELINE_SIMULATOR_URL=os.environ["PIPELINE_SIMULATOR_URL"], COLUMNS="250")
    code, check_out, check_err = await run_cli("check", env=env, timeout=90)
    assert code == 1 and "keyed-ghost: secret 'ghost' not found in PIPELINE_SECRETS_DIR" in check_out, check_out
    assert "redis://:***@127.0.0.1" in check_out and "PING ok" in check_out
    remote = {**env, "CLICKHOUSE_URL": f"https://analyst:{CLICKHOUSE_PASSWORD}@127.0.0.1:1",
              "REDIS_URL": f"redis://:wrong-{REDIS_TEST_PASSWORD}@127.0.0.1:{redis_auth.port}/0"}
    _, remote_out, remote_err = await run_cli("check", env=remote, timeout=90)
    assert "https://analyst:***@127.0.0.1:1" in remote_out and "AuthenticationError" in remote_out, remote_out

    log_text = json_logs.getvalue()
    outputs = {
        "log output": log_text,
        "metrics": metrics_text,
        "reply records": " ".join(r.value.decode() for r in reply_records),
        "usage events": " ".join(r.value.decode() for r in usage_records),
        "usage rows": repr(rows),
        "dead letters": repr([(d.headers, d.value) for d in dead]),
        "pipeline check": check_out + check_err + remote_out + remote_err,
    }
    assert len(reply_records) >= 6 and len(usage_records) >= 4 and len(log_text) > 0
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{where} holds a secret"
        assert "LEAKCHECK" not in text, f"{where} holds part of a secret"
