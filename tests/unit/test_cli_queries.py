"""`pipeline models --catalog`, `pipeline route` and `pipeline report` filters, run in-process (no broker)."""

from __future__ import annotations

import asyncio
import json
import typing
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.catalog.routing import CostPreference
from pipeline.cli.common import CostPreferenceName
from pipeline.cli.main import app
from pipeline.contracts.models import AttemptOutcome, UsageEvent
from pipeline.transport.clickhouse import ClickHouseUsageStore, StoredUsage

SECRET = "sk-live-do-not-print-0123456789"
MODELS = """
models:
  cheap:
    litellm_model: openai/gpt-4o-mini
    api_base: http://proxy-user:proxy-pass@127.0.0.1:9/v1
    api_key_env: H4_TEST_KEY
    context_window: 4000
    quality: 2
    capabilities: [json_mode]
    fallbacks: [claude]
  pricey: {litellm_model: openai/gpt-4o, context_window: 128000, quality: 5}
  claude:
    litellm_model: anthropic/claude-haiku-4-5
    price: {input_per_mtok: 1.5, output_per_mtok: 7}
    deployments:
      - {id: eu, api_base: "http://127.0.0.1:9/eu", rpm: 60}
      - {id: us, api_base: "http://127.0.0.1:9/us", weight: 2}
"""
ROUTING = """
routes:
  summarize: {candidates: [pricey, cheap]}
cost_controls:
  default_tenant: {daily_usd: 5}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    return {"PIPELINE_CONFIG_DIR": str(tmp_path), "PIPELINE_LOG_LEVEL": "WARNING", "H4_TEST_KEY": SECRET,
            "REDIS_URL": ""}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_models_catalog_json_lists_every_model_with_its_deployments_and_prices(env: dict[str, str]) -> None:
    code, out = invoke(env, "models", "--catalog", "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    by_name = {m["name"]: m for m in doc["models"]}
    assert list(by_name) == ["cheap", "pricey", "claude"]  # catalog order
    cheap = by_name["cheap"]
    assert cheap == {
        "name": "cheap", "provider": "openai", "litellm_model": "openai/gpt-4o-mini", "disabled": False,
        "capabilities": ["json_mode"], "context_window": 4000, "quality": 2,
        "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "source": "litellm"},
        "fallbacks": ["claude"], "context_window_fallbacks": [], "content_policy_fallbacks": [],
        "deployments": [{"name": "cheap", "id": "default", "provider": "openai", "litellm_model": "openai/gpt-4o-mini",
                         "api_base": "http://proxy-user:***@127.0.0.1:9/v1", "weight": 1.0, "rpm": None, "tpm": None,
                         "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "source": "litellm"}}],
    }
    claude = by_name["claude"]
    assert claude["price"] == {"input_per_mtok": 1.5, "output_per_mtok": 7.0, "source": "catalog"}
    assert [(d["name"], d["rpm"], d["weight"]) for d in claude["deployments"]] == [
        ("claude@eu", 60, 1.0), ("claude@us", None, 2.0)]
    assert by_name["pricey"]["context_window"] == 128000 and by_name["pricey"]["fallbacks"] == []
    assert SECRET not in out and "proxy-pass" not in out


def test_models_catalog_table_and_misused_flags(env: dict[str, str]) -> None:
    code, out = invoke(env, "models", "--catalog")
    assert code == 0, out
    assert "claude@eu" in out and "json_mode" in out and "4000" in out and SECRET not in out
    assert invoke(env, "models", "--format", "json")[0] == 2  # json needs --catalog
    assert invoke(env, "models", "--catalog", "--check")[0] == 2


def route_json(env: dict[str, str], *args: str, expect: int = 0) -> dict:
    code, out = invoke(env, "route", "--format", "json", *args)
    assert code == expect, out
    return json.loads(out)


def test_route_json_orders_by_the_cost_preference_given(env: dict[str, str]) -> None:
    listed = route_json(env, "-t", "summarize")
    assert [c["model"] for c in listed["candidates"]] == ["pricey", "cheap"] and listed["cost_preference"] == "listed"
    cheapest = route_json(env, "-t", "summarize", "--cost-preference", "cheapest")
    assert cheapest["cost_preference"] == "cheapest"
    assert [(c["order"], c["model"], c["role"], c["from"]) for c in cheapest["candidates"]] == [
        (1, "cheap", "primary", "route"), (2, "pricey", "fallback", "route")]
    assert cheapest["candidates"][0]["estimated_cost_usd"] < cheapest["candidates"][1]["estimated_cost_usd"]
    assert {b["budget"] for b in cheapest["budgets"]} >= {"tenant default daily"}
    assert set(cheapest) == {"task_type", "tenant", "model", "cost_preference", "candidates", "skipped",
                             "fallbacks", "fallbacks_source", "refusal", "budgets"}
    assert invoke(env, "route", "--cost-preference", "priciest")[0] == 2


def test_route_json_shows_configured_and_request_fallbacks(env: dict[str, str]) -> None:
    configured = route_json(env, "--model", "cheap")
    assert [(c["model"], c["from"]) for c in configured["candidates"]] == [("cheap", "model"), ("claude", "fallbacks")]
    assert configured["fallbacks"] == ["claude"] and configured["fallbacks_source"] == "catalog"
    given = route_json(env, "--model", "cheap", "--fallback", "pricey", "--fallback", "claude")
    assert [c["model"] for c in given["candidates"]] == ["cheap", "pricey", "claude"]
    assert given["fallbacks_source"] == "request"
    none = route_json(env, "--model", "cheap", "--no-fallbacks")
    assert [c["model"] for c in none["candidates"]] == ["cheap"] and none["fallbacks_source"] is None
    assert invoke(env, "route", "--model", "cheap", "--fallback", "claude", "--no-fallbacks")[0] == 2


def test_route_json_refusals_exit_1_with_the_reason(env: dict[str, str]) -> None:
    unknown = route_json(env, "--model", "cheap", "--fallback", "gpt-17", expect=1)
    assert unknown["candidates"] == [] and unknown["refusal"] == {
        "code": "unknown_model", "detail": "fallbacks[0]: model 'gpt-17' is not in the catalog"}
    too_long = route_json(env, "--model", "cheap", "--no-fallbacks", "--tokens", "5000", expect=1)
    assert too_long["refusal"]["code"] == "no_eligible_model"
    assert [(s["model"], s["reason"]) for s in too_long["skipped"]] == [("cheap", "context_too_long")]


def test_send_refuses_bad_fallbacks_before_connecting(env: dict[str, str]) -> None:
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # nothing listens: reaching it would hang or fail
    code, out = invoke(env, "send", "-m", "hi", "--fallback", "claude", "--fallback", "claude")
    assert code == 2 and "fallbacks" in out and "named twice" in out
    assert invoke(env, "send", "-m", "hi", "--fallback", "claude", "--no-fallbacks")[0] == 2


def test_cost_preference_choices_match_the_catalog_enum() -> None:
    assert set(typing.get_args(CostPreferenceName)) == {p.value for p in CostPreference}


def _event(n: int, tenant: str, model: str, cost: float) -> StoredUsage:
    event = UsageEvent(event_id=f"cli-{n}", request_id=f"q{n}", tenant=tenant, task_type="summarize", model=model,
                       provider="openai", status=AttemptOutcome.OK, prompt_tokens=10, completion_tokens=5,
                       total_tokens=15, cost_usd=cost, latency_ms=10.0, attempt=1, is_final=True,
                       ts=datetime.now(UTC))
    return StoredUsage(event, kafka_partition=0, kafka_offset=n, kafka_topic="llm.usage")


def test_report_filters_from_the_command_line(env: dict[str, str], chdb_dir: Path) -> None:
    db = f"cli_{uuid.uuid4().hex[:10]}"
    url = f"chdb://{chdb_dir}"
    store = ClickHouseUsageStore(url, db)
    store.migrate_sync()
    asyncio.run(store.insert([_event(1, "acme", "cheap", 0.01), _event(2, "globex", "cheap", 0.02),
                              _event(3, "acme", "pricey", 0.04)]))
    store.close()
    env = {**env, "CLICKHOUSE_URL": url, "CLICKHOUSE_DATABASE": db}
    code, out = invoke(env, "report", "--tenant", "acme", "--format", "json")
    assert code == 0, out
    assert sorted((r["model"], r["tenant"], r["calls"]) for r in json.loads(out)) == [
        ("cheap", "acme", 1), ("pricey", "acme", 1)]
    code, out = invoke(env, "report", "top-tenants", "--model", "cheap", "--task-type", "summarize", "--format", "json")
    assert code == 0, out
    assert [(r["tenant"], r["share_pct"]) for r in json.loads(out)] == [("globex", 66.67), ("acme", 33.33)]
    code, out = invoke(env, "report", "budgets", "--tenant", "acme")
    assert code == 2 and "do not apply" in out


def _doc_examples() -> list[dict]:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]


def _shape(value: object) -> object:
    """Keys all the way down (the first item stands for a list), so docs and output compare by shape."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], dict) else []
    return None


def test_docs_cli_examples_have_exactly_the_keys_printed(env: dict[str, str]) -> None:
    catalog_example, route_example = _doc_examples()
    catalog = json.loads(invoke(env, "models", "--catalog", "--format", "json")[1])
    assert _shape(catalog_example) == _shape(catalog)
    # cheap's window is too small for the prompt: one skip, then its catalog fallback claude answers.
    route = route_json(env, "-t", "summarize", "--model", "cheap", "--tokens", "5000")
    assert route["skipped"] and route["candidates"] and route["fallbacks"]
    assert _shape(route_example) == _shape(route)
    refused = route_json(env, "--model", "cheap", "--no-fallbacks", "--tokens", "5000", expect=1)
    assert set(refused["refusal"]) == {"code", "detail"}


def test_send_set_needs_field_equals_value_and_names_an_unknown_field() -> None:
    """Both refusals come before any broker is reached (exit 2)."""
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    runner = CliRunner()
    bad = runner.invoke(app, ["send", "-m", "hi", "--set", "top_p"])
    assert bad.exit_code == 2 and "expected FIELD=VALUE" in bad.output
    unknown = runner.invoke(app, ["send", "-m", "hi", "--set", "tpo_p=0.9"])
    assert unknown.exit_code == 2 and "tpo_p" in unknown.output and "Extra inputs are not permitted" in unknown.output
