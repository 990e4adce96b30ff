"""LiteLLM Proxy configs as our catalog (pure: no broker, no provider), and per-deployment providers."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.catalog import Catalog, ConfigError, load_catalog, models_source
from pipeline.catalog.litellm_config import PRICE_FIELDS
from pipeline.catalog.live import LiveCatalog
from pipeline.catalog.resilience import Deployment
from pipeline.cli.convert import convert_files
from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyStatus
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.deployments import DeploymentPool
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.state.health import InProcessHealth
from pipeline.transport.provider import MockProvider, ProviderError, ProviderResponse

SECRET = "sk-live-THIS-IS-A-SECRET-123"


def write(tmp_path: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return tmp_path


def entry(name: str, model: str, **params: Any) -> dict[str, Any]:
    info = params.pop("model_info", None)
    body: dict[str, Any] = {"model_name": name, "litellm_params": {"model": model, **params}}
    return {**body, "model_info": info} if info is not None else body


def proxy_config(**sections: Any) -> dict[str, Any]:
    """Three providers behind two model names, as a LiteLLM Proxy config would have them."""
    return {
        "model_list": [
            entry("gpt-4o", "azure/prod-gpt4o", api_base="https://example-eu.openai.azure.com",
                  api_key="os.environ/AZURE_API_KEY", api_version="2024-06-01", rpm=60, tpm=90000,
                  model_info={"id": "eu", "base_model": "azure/gpt-4o"}),
            entry("gpt-4o", "openai/gpt-4o", api_key="os.environ/OPENAI_API_KEY", organization="org-1", weight=3),
            entry("claude", "anthropic/claude-haiku-4-5", api_key="{anthropic_key}", timeout=12,
                  extra_headers={"anthropic-beta": "tools-2024"}),
        ],
        **sections,
    }


def load(tmp_path: Path, config: dict[str, Any]) -> Catalog:
    return load_catalog(write(tmp_path, config))


# -- model_list ---------------------------------------------------------------------------------


def test_entries_sharing_a_model_name_become_deployments_each_with_its_provider(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config())
    gpt = catalog.models["gpt-4o"]
    eu, oai = gpt.deployments
    assert (eu.name, eu.provider, eu.litellm_model) == ("gpt-4o@eu", "azure", "azure/prod-gpt4o")
    assert (oai.name, oai.provider, oai.litellm_model) == ("gpt-4o@openai", "openai", "openai/gpt-4o")
    assert eu.litellm_params == {"api_version": "2024-06-01"} and oai.litellm_params == {"organization": "org-1"}
    assert (eu.rpm, eu.tpm, eu.weight, oai.weight) == (60, 90000, 1.0, 3.0)
    assert eu.api_base == "https://example-eu.openai.azure.com"
    assert (eu.key_source(), oai.key_source()) == ("env AZURE_API_KEY", "env OPENAI_API_KEY")
    # base_model prices and describes a deployment name LiteLLM does not know.
    assert gpt.price is not None and gpt.price.input_per_mtok == pytest.approx(2.5)
    assert gpt.price.cache_read_per_mtok == pytest.approx(1.25)  # every rate of the base model, not only two
    assert {"tools", "json_mode", "vision"} <= gpt.capabilities
    claude = catalog.models["claude"]
    (only,) = claude.deployments
    assert (only.name, only.provider, only.key_source()) == ("claude", "anthropic", "secret anthropic_key")
    assert only.litellm_params == {"extra_headers": {"anthropic-beta": "tools-2024"}}
    assert claude.resilience.timeout_s == 12  # a deployment's timeout is the model's per-attempt timeout
    assert catalog.routing.routes == {} and catalog.routing.default is None  # requests name their model


def test_any_litellm_param_passes_through_and_custom_llm_provider_sets_the_provider(tmp_path: Path) -> None:
    params = {"aws_region_name": "eu-west-1", "vertex_project": "p1", "vertex_location": "europe-west4",
              "max_tokens": 256, "aws_secret_access_key": "os.environ/AWS_SECRET"}
    catalog = load(tmp_path, {"model_list": [
        entry("house", "house-model", custom_llm_provider="openai", api_base="http://127.0.0.1:9/v1",
              input_cost_per_token=1e-6, output_cost_per_token=2e-6, **params)]})
    (d,) = catalog.models["house"].deployments
    assert d.provider == "openai" and catalog.models["house"].provider == "openai"
    assert d.litellm_params == {**params, "custom_llm_provider": "openai"}
    price = catalog.models["house"].price
    assert price is not None and (price.input_per_mtok, price.output_per_mtok) == (1.0, 2.0)


def test_model_info_maps_context_window_every_price_and_capabilities(tmp_path: Path) -> None:
    info = {"max_input_tokens": 32000, "mode": "chat", "supports_function_calling": True, "supports_vision": False,
            **{k: (i + 1) * 1e-7 for i, k in enumerate(PRICE_FIELDS)}}
    catalog = load(tmp_path, {"model_list": [entry("m", "openai/gpt-4o-mini", model_info=info)]})
    spec = catalog.models["m"]
    assert spec.context_window == 32000 and spec.capabilities == {"tools"}
    assert spec.price is not None
    for i, ours in enumerate(PRICE_FIELDS.values()):
        assert getattr(spec.price, ours) == pytest.approx((i + 1) * 0.1), ours
    assert catalog.warnings == ()


def test_embedding_mode_is_the_embeddings_capability(tmp_path: Path) -> None:
    catalog = load(tmp_path, {"model_list": [
        entry("emb", "openai/text-embedding-3-small", model_info={"mode": "embedding"})]})
    assert catalog.models["emb"].capabilities == {"embeddings"}


# -- router_settings / litellm_settings ---------------------------------------------------------


@pytest.mark.parametrize(("strategy", "ours"), [("simple-shuffle", "weighted"), ("least-busy", "least_busy"),
                                                 ("latency-based-routing", "latency")])
def test_routing_strategy_maps_onto_load_balancing(tmp_path: Path, strategy: str, ours: str) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={"routing_strategy": strategy}))
    assert catalog.models["gpt-4o"].resilience.load_balancing.value == ours and catalog.warnings == ()


def test_usage_based_routing_warns_and_balances_by_weight(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={"routing_strategy": "usage-based-routing-v2"}))
    assert catalog.models["gpt-4o"].resilience.load_balancing.value == "weighted"
    (warning,) = catalog.warnings
    assert "router_settings.routing_strategy" in warning and "usage-based-routing-v2" in warning


def test_retries_cooldowns_and_timeouts_map_onto_resilience(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={
        "retry_policy": {"RateLimitErrorRetries": 5, "TimeoutErrorRetries": 1, "InternalServerErrorRetries": 3},
        "num_retries": 2, "allowed_fails": 2, "cooldown_time": 45, "timeout": 20, "stream_timeout": 7}))
    r = catalog.models["gpt-4o"].resilience
    assert r.rule("rate_limited").retries == 5 and r.rule("server_error").retries == 3
    assert r.rule("connection_error").retries == 3 and r.rule("malformed_response").retries == 2
    assert r.rule("timeout").retries == 1 and r.retry_timeouts
    assert r.rule("rate_limited").max_delay_s == 10.0  # our backoff kept, LiteLLM's count
    # LiteLLM cools down once failures exceed allowed_fails, counted over cooldown_time.
    assert (r.allowed_fails, r.cooldown_s, r.fail_window_s) == (3, 45, 45)
    assert (r.timeout_s, r.first_token_timeout_s) == (20, 7)
    assert catalog.models["claude"].resilience.timeout_s == 12  # its own deployment timeout wins


def test_retry_classes_we_never_retry_are_named(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={"retry_policy": {
        "BadRequestErrorRetries": 2, "AuthenticationErrorRetries": 1, "ContentPolicyViolationErrorRetries": 1,
        "SomethingErrorRetries": 1}}))
    named = [w.split(": ")[1] for w in catalog.warnings]
    assert named == ["router_settings.retry_policy.BadRequestErrorRetries",
                     "router_settings.retry_policy.AuthenticationErrorRetries",
                     "router_settings.retry_policy.ContentPolicyViolationErrorRetries",
                     "router_settings.retry_policy.SomethingErrorRetries"]


def test_model_group_retry_policy_is_per_model(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={
        "model_group_retry_policy": {"claude": {"RateLimitErrorRetries": 7}}}))
    assert catalog.models["claude"].resilience.rule("rate_limited").retries == 7
    assert catalog.models["gpt-4o"].resilience.rule("rate_limited").retries == 2  # our default


def test_fallbacks_become_the_models_fallbacks(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={"fallbacks": [{"gpt-4o": ["claude"]}]}))
    assert catalog.models["gpt-4o"].fallbacks == ("claude",) and catalog.models["claude"].fallbacks == ()
    assert catalog.warnings == ()
    plan = plan_route(request(model="gpt-4o"), catalog)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["gpt-4o", "claude"]


def test_default_and_wildcard_fallbacks_serve_models_without_their_own(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(litellm_settings={"default_fallbacks": ["claude"]}))
    assert catalog.models["gpt-4o"].fallbacks == ("claude",) and catalog.models["claude"].fallbacks == ()
    catalog = load(tmp_path, proxy_config(router_settings={"fallbacks": [{"*": ["gpt-4o"]}]}))
    assert catalog.models["claude"].fallbacks == ("gpt-4o",)


@pytest.mark.parametrize("key", ["context_window_fallbacks", "content_policy_fallbacks"])
def test_narrow_fallback_lists_map_onto_the_fields_of_their_kind_without_a_warning(tmp_path: Path, key: str) -> None:
    catalog = load(tmp_path, proxy_config(router_settings={
        "fallbacks": [{"claude": ["gpt-4o"]}], key: [{"claude": ["gpt-4o"]}, {"gpt-4o": ["claude"]}]}))
    claude, other = catalog.models["claude"], ("content_policy_fallbacks" if key.startswith("context")
                                               else "context_window_fallbacks")
    assert claude.fallbacks == ("gpt-4o",) and getattr(claude, key) == ("gpt-4o",) and getattr(claude, other) == ()
    assert catalog.models["gpt-4o"].fallbacks == () and getattr(catalog.models["gpt-4o"], key) == ("claude",)
    assert catalog.warnings == ()


def test_a_wildcard_in_a_narrow_fallback_list_is_warned_as_litellm_ignores_it(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(litellm_settings={"context_window_fallbacks": [{"*": ["claude"]}]}))
    assert catalog.models["gpt-4o"].context_window_fallbacks == ()
    (warning,) = catalog.warnings
    assert "litellm_settings.context_window_fallbacks[0].*" in warning and "only in fallbacks" in warning


def test_narrow_fallback_lists_name_known_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"router_settings\.content_policy_fallbacks\[0\]\.claude.*'gpt-5'"):
        load(tmp_path, proxy_config(router_settings={"content_policy_fallbacks": [{"claude": ["gpt-5"]}]}))


def test_redis_and_unknown_settings_are_warned_by_name_never_by_value(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(
        router_settings={"redis_host": "cache.internal", "redis_port": 6380, "redis_password": SECRET,
                         "enable_pre_call_checks": True, "brand_new_option": 1},
        litellm_settings={"success_callback": ["langfuse"], "set_verbose": True, "mystery": 2},
        general_settings={"master_key": SECRET, "database_url": SECRET},
        environment_variables={"OPENAI_API_KEY": SECRET}))
    text = "\n".join(catalog.warnings)
    for name in ("router_settings.redis_host", "router_settings.redis_port", "router_settings.redis_password",
                 "router_settings.brand_new_option", "litellm_settings.success_callback",
                 "litellm_settings.set_verbose", "litellm_settings.mystery", "general_settings", "master_key",
                 "database_url", "environment_variables", "OPENAI_API_KEY"):
        assert name in text, name
    assert "REDIS_URL" in text and "enable_pre_call_checks" not in text  # built in: we always check
    assert SECRET not in text and "cache.internal" not in text


def test_litellm_settings_drop_params_retries_and_timeout(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(litellm_settings={"drop_params": True, "num_retries": 4,
                                                            "request_timeout": 33}))
    gpt = catalog.models["gpt-4o"]
    assert gpt.drop_params and all(d.drop_params for d in gpt.deployments)
    assert gpt.resilience.rule("server_error").retries == 4 and gpt.resilience.timeout_s == 33


def test_router_settings_win_over_litellm_settings(tmp_path: Path) -> None:
    catalog = load(tmp_path, proxy_config(litellm_settings={"num_retries": 4, "request_timeout": 33},
                                          router_settings={"num_retries": 1, "timeout": 9}))
    r = catalog.models["gpt-4o"].resilience
    assert r.rule("server_error").retries == 1 and r.timeout_s == 9


def test_disable_cooldowns(tmp_path: Path) -> None:
    r = load(tmp_path, proxy_config(router_settings={"disable_cooldowns": True})).models["gpt-4o"].resilience
    assert r.cooldown_s == 0 and r.quota_cooldown_s == 0


# -- refused, with the key named and no secret shown ---------------------------------------------


@pytest.mark.parametrize(("config", "entry_name", "says"), [
    ({"model_list": [entry("m", "openai/gpt-4o", api_key=SECRET)]}, "model_list[0].litellm_params.api_key",
     "reference"),
    ({"model_list": [entry("m", "openai/gpt-4o", aws_secret_access_key=SECRET)]}, "model_list[0].litellm_params",
     "aws_secret_access_key"),
    ({"model_list": [entry("m", "openai/gpt-4o", extra_headers={"Authorization": f"Bearer {SECRET}"})]},
     "model_list[0].litellm_params", "extra_headers.Authorization"),
    ({"model_list": [entry("m", "openai/gpt-4o", mock_response="hi")]}, "model_list[0].litellm_params.mock_response",
     "set by the pipeline"),
    ({"model_list": [entry("m", "openai/gpt-4o", stream=True)]}, "model_list[0].litellm_params.stream",
     "set by the pipeline"),
    ({"model_list": [{"litellm_params": {"model": "openai/gpt-4o"}}]}, "model_list[0].model_name", "required"),
    ({"model_list": [{"model_name": "m", "litellm_params": {}}]}, "model_list[0].litellm_params.model", "required"),
    ({"model_list": []}, "model_list", "non-empty"),
    (proxy_config(router_settings={"fallbacks": [{"gpt-4o": ["nope"]}]}), "router_settings.fallbacks[0].gpt-4o",
     "unknown model_name 'nope'"),
    (proxy_config(router_settings={"routing_strategy": "fastest"}), "router_settings.routing_strategy",
     "unknown routing_strategy"),
    (proxy_config(router_settings={"num_retries": -1}), "router_settings.num_retries", "whole number"),
])
def test_what_cannot_be_honoured_is_refused_naming_the_key(
    tmp_path: Path, config: dict[str, Any], entry_name: str, says: str,
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, config)
    assert err.value.entry == entry_name and says in err.value.problem
    assert SECRET not in str(err.value)


def test_our_own_format_refuses_owned_and_literal_credential_params(tmp_path: Path) -> None:
    def models(params: dict[str, Any]) -> Path:
        write(tmp_path, {"routes": {}}, "routing.yaml")
        return write(tmp_path, {"models": {"m": {"litellm_model": "openai/gpt-4o", "litellm_params": params}}},
                     "models.yaml")

    with pytest.raises(ConfigError) as err:
        load_catalog(models({"num_retries": 3}))
    assert "litellm_params.num_retries is set by the pipeline" in err.value.problem
    with pytest.raises(ConfigError) as err:
        load_catalog(models({"client_secret": SECRET}))
    assert "client_secret" in err.value.problem and SECRET not in str(err.value)
    ok = load_catalog(models({"api_version": "2024-06-01", "client_secret": "${AZ_CLIENT_SECRET}"}))
    # A credential reference stays as written until call time (never interpolated at load).
    assert ok.models["m"].deployments[0].litellm_params["client_secret"] == "${AZ_CLIENT_SECRET}"


def test_credentials_in_params_resolve_at_call_time_and_are_reported_for_scrubbing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = Deployment(id="a", litellm_model="bedrock/anthropic.claude", litellm_params={
        "aws_secret_access_key": "os.environ/AWS_SECRET", "aws_region_name": "eu-west-1",
        "extra_headers": {"x-api-key": "{gateway}", "x-team": "blue"}})
    assert d.provider == "bedrock"

    class Secrets:
        def secret(self, name: str) -> str:
            return {"gateway": "gw-SECRET"}[name]

    monkeypatch.setenv("AWS_SECRET", "aws-SECRET")
    params, credentials = d.call_params(Secrets())
    assert params == {"aws_secret_access_key": "aws-SECRET", "aws_region_name": "eu-west-1",
                      "extra_headers": {"x-api-key": "gw-SECRET", "x-team": "blue"}}
    assert set(credentials) == {"aws-SECRET", "gw-SECRET"}
    monkeypatch.delenv("AWS_SECRET")
    with pytest.raises(LookupError, match="AWS_SECRET"):
        d.call_params(Secrets())


# -- the seeds' router-mode provider record ------------------------------------------------------


def test_router_mode_provider_record_with_secret_placeholders_loads(tmp_path: Path) -> None:
    record = {"name": "team-router", "mode": "router", "router_config": {
        "model_list": [entry("fast", "openai/gpt-4o-mini", api_key="{openai_key}"),
                       entry("fast", "anthropic/claude-haiku-4-5", api_key="{anthropic_key}")],
        "router_settings": {"routing_strategy": "least-busy", "num_retries": 1}}}
    catalog = load(tmp_path, record)
    fast = catalog.models["fast"]
    assert [(d.provider, d.key_source()) for d in fast.deployments] == [
        ("openai", "secret openai_key"), ("anthropic", "secret anthropic_key")]
    assert fast.resilience.load_balancing.value == "least_busy"
    assert [w.split(": ", 2)[1] for w in catalog.warnings] == ["name", "mode"]  # record fields, named


# -- selection, live reload, conversion ---------------------------------------------------------


def test_a_directory_with_config_yaml_and_no_models_yaml_reads_it_and_routing_yaml_still_applies(
    tmp_path: Path,
) -> None:
    write(tmp_path, proxy_config())
    write(tmp_path, {"routes": {"summarize": {"candidates": ["claude", "gpt-4o"]}}}, "routing.yaml")
    assert models_source(tmp_path) == tmp_path / "config.yaml"
    catalog = load_catalog(tmp_path)
    assert catalog.routing.routes["summarize"].candidates == ("claude", "gpt-4o")


def test_the_setting_points_at_a_litellm_config_elsewhere(tmp_path: Path) -> None:
    litellm = write(tmp_path / "litellm", proxy_config()) / "config.yaml"
    config_dir = write(tmp_path / "config", {"models": {"m": {"litellm_model": "openai/gpt-4o"}}}, "models.yaml")
    catalog = load_catalog(config_dir, litellm)
    assert set(catalog.models) == {"gpt-4o", "claude"}
    assert any("models.yaml: not used" in w for w in catalog.warnings)


def test_live_catalog_reloads_when_the_litellm_config_changes(tmp_path: Path) -> None:
    litellm = write(tmp_path, proxy_config(), "proxy.yaml") / "proxy.yaml"
    live = LiveCatalog(tmp_path, litellm_config=litellm)
    assert set(live().models) == {"gpt-4o", "claude"}
    config = proxy_config()
    config["model_list"].append(entry("mini", "openai/gpt-4o-mini"))
    litellm.write_text(yaml.safe_dump(config), encoding="utf-8")
    stat = litellm.stat()
    os.utime(litellm, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a coarse clock still sees it
    assert live.reload_if_changed() and "mini" in live().models


def test_convert_writes_files_that_load_into_the_same_catalog(tmp_path: Path) -> None:
    source = write(tmp_path / "litellm", proxy_config(
        router_settings={"fallbacks": [{"gpt-4o": ["claude"]}], "context_window_fallbacks": [{"claude": ["gpt-4o"]}],
                         "content_policy_fallbacks": [{"gpt-4o": ["claude"]}], "num_retries": 1, "allowed_fails": 1,
                         "cooldown_time": 10, "routing_strategy": "latency-based-routing", "redis_host": "r"},
        litellm_settings={"drop_params": True})) / "config.yaml"
    written, warnings = convert_files(source, tmp_path / "ours")
    assert [p.name for p in written] == ["models.yaml", "routing.yaml"]
    assert any("redis_host" in w for w in warnings)
    text = (tmp_path / "ours" / "models.yaml").read_text()
    assert "os.environ/AZURE_API_KEY" in text and "{anthropic_key}" in text  # references kept as written
    converted = yaml.safe_load(text)["models"]
    assert converted["claude"]["context_window_fallbacks"] == ["gpt-4o"]
    assert converted["gpt-4o"]["content_policy_fallbacks"] == ["claude"]
    theirs, ours = load_catalog(source.parent), load_catalog(tmp_path / "ours")
    assert ours.models == theirs.models and ours.routing == theirs.routing
    assert ours.warnings == ()
    with pytest.raises(FileExistsError):
        convert_files(source, tmp_path / "ours")


def test_the_convert_command_prints_what_did_not_map_and_refuses_a_literal_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    source = write(tmp_path / "litellm", proxy_config(router_settings={"redis_password": SECRET})) / "config.yaml"
    result = CliRunner().invoke(app, ["config", "convert", str(source), "--out", str(tmp_path / "ours")],
                                env={"AZURE_API_KEY": "a", "OPENAI_API_KEY": "o"})
    assert result.exit_code == 0, result.output
    assert "router_settings.redis_password" in result.output and SECRET not in result.output
    assert (tmp_path / "ours" / "models.yaml").is_file()
    bad = write(tmp_path / "bad", {"model_list": [entry("m", "openai/gpt-4o", api_key=SECRET)]}) / "config.yaml"
    result = CliRunner().invoke(app, ["config", "convert", str(bad), "--out", str(tmp_path / "bad-out")])
    assert result.exit_code == 2 and "model_list[0].litellm_params.api_key" in result.output
    assert SECRET not in result.output and not (tmp_path / "bad-out").exists()


# -- the provider is recorded per deployment -----------------------------------------------------


def request(**kw: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"request_id": "r1", "task_type": "chat", "cache": False,
                                             "messages": [{"role": "user", "content": "hi"}], **kw})


async def test_a_multi_provider_model_records_each_attempt_under_the_provider_that_served_it(
    tmp_path: Path,
) -> None:
    catalog = load(tmp_path, {
        # openai is all but certain to be picked first (and the rng is seeded).
        "model_list": [entry("mixed", "openai/gpt-4o-mini", weight=1000),
                       entry("mixed", "anthropic/claude-haiku-4-5", weight=0.001)],
        "router_settings": {"allowed_fails": 0, "retry_policy": {"InternalServerErrorRetries": 1}}})
    provider = MockProvider.scripted({"mixed@openai": [ProviderError(ErrorCode.SERVER_ERROR, "500", status=500)],
                                      "mixed@anthropic": [ProviderResponse("ok", 10, 2)]})
    req = request(model="mixed")
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    started = time.monotonic()
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5, pool=DeploymentPool(
        InProcessHealth(), random.Random(3)), rng=random.Random(3)))
    assert time.monotonic() - started < 5
    reply = build_reply(req, plan, outcome, 1.0)
    events = usage_events(req, plan, outcome)
    assert reply.status is ReplyStatus.OK, reply.error
    # The openai deployment failed and cooled down; the retry of the same model went to anthropic.
    expected = [("mixed", "mixed@openai", "openai"), ("mixed", "mixed@anthropic", "anthropic")]
    assert [(a.model, a.deployment, a.provider) for a in reply.attempts] == expected
    assert [(e.model, e.deployment, e.provider) for e in events] == expected
    assert reply.provider == "anthropic" and catalog.models["mixed"].provider == "openai"


def test_a_base_model_litellm_cannot_price_is_refused_naming_it(tmp_path: Path) -> None:
    config = {"model_list": [entry("gpt-4o", "azure/prod-gpt4o", api_base="https://x.openai.azure.com",
                                   model_info={"base_model": "azure/no-such-model"})]}
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.model_info\.base_model: LiteLLM has no price for "
                                          r"'azure/no-such-model'"):
        load(tmp_path, config)


def test_a_deployment_name_litellm_cannot_price_is_refused_in_litellm_terms(tmp_path: Path) -> None:
    config = {"model_list": [entry("gpt-4o", "openai/gpt-4o"),
                             entry("gpt-4o", "azure/prod-gpt4o", api_base="https://x.openai.azure.com")]}
    with pytest.raises(ConfigError, match=r"model_list\[1\]: LiteLLM has no price for 'azure/prod-gpt4o': set "
                                          r"model_info\.base_model"):
        load(tmp_path, config)
