"""Unit tests for the simulator's I/O-free parts: fault matching and wire shapes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.simulator import FaultBook, FaultRule, SimulatorConfig, wire


def outcomes(book: FaultBook, n: int, model: str = "m", api: str = "openai") -> list[str]:
    return [book.decide(model, api).outcome for _ in range(n)]


def test_no_rules_means_ok() -> None:
    decision = FaultBook().decide("gpt-4o-mini", "openai")
    assert decision.fault is None and decision.outcome == "ok" and decision.rule_index is None


def test_glob_and_api_filter() -> None:
    book = FaultBook([FaultRule(model="gpt-*", api="openai", fault="auth")])
    assert book.decide("gpt-4o-mini", "openai").fault == "auth"
    assert book.decide("gpt-4o-mini", "anthropic").fault is None
    assert book.decide("claude-3", "openai").fault is None


def test_first_matching_rule_wins() -> None:
    book = FaultBook([FaultRule(model="llama*", fault="bad_request"), FaultRule(fault="server_error")])
    assert book.decide("llama3.1", "ollama").fault == "bad_request"
    assert book.decide("gpt-4o", "openai").fault == "server_error"
    assert book.fired == (1, 1)


def test_times_budget_then_falls_through() -> None:
    book = FaultBook([FaultRule(fault="rate_limit", times=2), FaultRule(fault="server_error", times=1)])
    assert outcomes(book, 5) == ["rate_limit", "rate_limit", "server_error", "ok", "ok"]


def test_times_zero_never_fires() -> None:
    assert outcomes(FaultBook([FaultRule(fault="auth", times=0)]), 3) == ["ok"] * 3


def test_budget_counts_only_matching_requests() -> None:
    book = FaultBook([FaultRule(model="a", fault="auth", times=1)])
    assert [book.decide(m, "openai").outcome for m in ("b", "b", "a", "a")] == ["ok", "ok", "auth", "ok"]


def test_probability_is_seeded_and_reproducible() -> None:
    rules = [FaultRule(fault="server_error", probability=0.3)]
    first = outcomes(FaultBook(rules, seed=7), 200)
    assert first == outcomes(FaultBook(rules, seed=7), 200)
    assert first != outcomes(FaultBook(rules, seed=8), 200)
    assert 40 <= first.count("server_error") <= 80


def test_probability_extremes() -> None:
    assert outcomes(FaultBook([FaultRule(fault="auth", probability=0.0)]), 50) == ["ok"] * 50
    assert outcomes(FaultBook([FaultRule(fault="auth", probability=1.0)]), 5) == ["auth"] * 5


def test_probability_miss_does_not_spend_budget_and_falls_through() -> None:
    book = FaultBook([FaultRule(fault="auth", probability=0.5, times=3), FaultRule(fault="bad_request")])
    result = outcomes(book, 40)
    assert result.count("auth") == 3
    assert result.count("bad_request") == 37


def test_set_rules_resets_counters_and_rng() -> None:
    rules = [FaultRule(fault="timeout", probability=0.5, times=5)]
    book = FaultBook(rules, seed=3)
    before = outcomes(book, 20)
    book.set_rules(rules)
    assert book.fired == (0,)
    assert outcomes(book, 20) == before


def test_add_rule_keeps_existing_counters() -> None:
    book = FaultBook([FaultRule(fault="auth", times=1)])
    book.decide("m", "openai")
    book.add_rule(FaultRule(fault="bad_request"))
    assert book.fired == (1, 0)
    assert book.decide("m", "openai").fault == "bad_request"
    book.clear()
    assert book.rules == () and book.decide("m", "openai").fault is None


def test_latency_only_rule() -> None:
    decision = FaultBook([FaultRule(model="slow-*", latency_ms=250)]).decide("slow-model", "ollama")
    assert decision.fault is None and decision.outcome == "ok"
    assert decision.extra_latency_ms == 250 and decision.rule_index == 0


def test_snapshot_reports_fired() -> None:
    book = FaultBook([FaultRule(fault="malformed", times=1)])
    book.decide("m", "anthropic")
    snap = book.snapshot()
    assert snap[0]["fault"] == "malformed" and snap[0]["fired"] == 1
    assert FaultRule.model_validate({k: v for k, v in snap[0].items() if k != "fired"}) == book.rules[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fault": "explode"},
        {"fault": "auth", "probability": 1.5},
        {"fault": "auth", "times": -1},
        {"fault": "server_error", "status": 404},
        {"api": "cohere", "fault": "auth"},
        {},  # neither a fault nor latency: a no-op rule is a mistake
        {"fault": "auth", "unknown": 1},
    ],
)
def test_rule_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultRule.model_validate(kwargs)


def test_rule_is_frozen() -> None:
    rule = FaultRule(fault="auth")
    with pytest.raises(ValidationError):
        rule.fault = "timeout"  # type: ignore[misc]


def test_config_defaults_and_validation() -> None:
    cfg = SimulatorConfig()
    assert (cfg.latency_ms, cfg.completion_tokens, cfg.prompt_tokens, cfg.request_log_size) == (0, 16, None, 100_000)
    with pytest.raises(ValidationError):
        SimulatorConfig(completion_tokens=0)
    with pytest.raises(ValidationError):
        SimulatorConfig(latency_ms=-1)


# --------------------------------------------------------------------------- wire


def test_token_estimate_and_reply_text() -> None:
    assert wire.estimate_tokens([""]) == 1
    assert wire.estimate_tokens(["abcd", "e"]) == 2
    text = wire.reply_text("m", "hello world", 16)
    assert text.startswith("sim reply from m to: hello world") and len(text.split()) == 16
    assert wire.reply_text("m", "x" * 100, 16) == wire.reply_text("m", "x" * 100, 16)


def test_prompt_texts_per_api() -> None:
    body = {"system": "sys", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert wire.prompt_texts("anthropic", body) == ["sys", "hi"]
    assert wire.prompt_texts("ollama", {"prompt": "p", "system": "s"}) == ["s", "p"]
    assert wire.last_user_text("openai", {"messages": [{"role": "user", "content": "a"},
                                                       {"role": "assistant", "content": "b"}]}) == "a"


def test_success_bodies_carry_usage() -> None:
    oa = wire.success_body("openai", "/v1/chat/completions", "m", "c", 3, 5, seq=1, created=0)
    assert oa["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert oa["choices"][0]["finish_reason"] == "stop"
    an = wire.success_body("anthropic", "/v1/messages", "m", "c", 3, 5, seq=1, created=0)
    assert an["usage"] == {"input_tokens": 3, "output_tokens": 5} and an["stop_reason"] == "end_turn"
    gen = wire.success_body("ollama", "/api/generate", "m", "c", 3, 5, seq=1, created=0)
    chat = wire.success_body("ollama", "/api/chat", "m", "c", 3, 5, seq=1, created=0)
    assert gen["response"] == "c" and chat["message"]["content"] == "c"
    assert gen["done"] and chat["prompt_eval_count"] == 3 and chat["eval_count"] == 5


@pytest.mark.parametrize("api", ["openai", "anthropic", "ollama"])
def test_error_responses(api: str) -> None:
    status, _, headers = wire.error_response(api, "rate_limit", "m", prompt_tokens=1, retry_after_s=0.25)
    assert status == 429 and headers == {"retry-after": "0.25"}
    assert wire.error_response(api, "server_error", "m", prompt_tokens=1, status=503)[0] == 503
    assert wire.error_response(api, "auth", "m", prompt_tokens=1)[0] == 401
    for fault in ("context_length", "bad_request", "content_policy"):
        assert wire.error_response(api, fault, "m", prompt_tokens=1)[0] == 400  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wire.error_response(api, "timeout", "m", prompt_tokens=1)


def test_error_bodies_never_echo_keys_and_malformed_is_not_json() -> None:
    _, body, _ = wire.error_response("openai", "auth", "m", prompt_tokens=1)
    assert body["error"]["code"] == "invalid_api_key" and "sk-" not in json.dumps(body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(wire.MALFORMED_BODY)
