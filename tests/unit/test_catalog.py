"""Config loading: the shipped files load; every kind of mistake names file, entry and problem."""

from pathlib import Path

import pytest

from pipeline.catalog import ConfigError, load_catalog

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"

MODELS = """
models:
  a:
    litellm_model: openai/gpt-4o-mini
  b:
    litellm_model: ollama_chat/llama3.1
    api_base: ${SIM_URL_FOR_TEST:-http://127.0.0.1:1}
    price: {input_per_mtok: 0, output_per_mtok: 0}
"""
ROUTING = """
routes:
  summarize: {candidates: [a, b]}
default: {candidates: [b]}
"""


def write(tmp_path: Path, models: str = MODELS, routing: str = ROUTING) -> Path:
    (tmp_path / "models.yaml").write_text(models)
    (tmp_path / "routing.yaml").write_text(routing)
    return tmp_path


def test_shipped_config_loads() -> None:
    catalog = load_catalog(REPO_CONFIG)
    assert {"sim-gpt-4o-mini", "sim-claude-haiku", "sim-llama", "gpt-4o-mini", "claude-haiku-4-5"} <= set(
        catalog.models
    )
    assert catalog.models["sim-claude-haiku"].provider == "anthropic"
    assert catalog.models["sim-llama"].provider == "ollama"
    assert catalog.routing.default is not None
    # Real-provider keys are referenced by variable name only.
    assert catalog.models["gpt-4o-mini"].api_key_env == "OPENAI_API_KEY"


def test_env_interpolation_with_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_URL_FOR_TEST", raising=False)
    assert load_catalog(write(tmp_path)).models["b"].api_base == "http://127.0.0.1:1"
    monkeypatch.setenv("SIM_URL_FOR_TEST", "http://sim:9")
    assert load_catalog(write(tmp_path)).models["b"].api_base == "http://sim:9"


def test_route_and_default() -> None:
    catalog = load_catalog(REPO_CONFIG)
    assert catalog.routing.route_for("summarize") is catalog.routing.routes["summarize"]
    assert catalog.routing.route_for("never-heard-of-it") is catalog.routing.default


@pytest.mark.parametrize(
    "models, routing, file, entry, problem",
    [
        (MODELS, "routes:\n  summarize: {candidates: [a, zzz]}\n", "routing.yaml",
         "routes.summarize.candidates[1]", "unknown model 'zzz'"),
        (MODELS, "routes:\n  summarize: {candidates: []}\n", "routing.yaml", "routes.summarize.candidates",
         "at least 1"),
        (MODELS, "routes: [1, 2\n", "routing.yaml", "line", "invalid YAML"),
        (MODELS, "- just\n- a list\n", "routing.yaml", "<top level>", "expected a mapping"),
        ("models:\n  a: {api_base: x}\n", ROUTING, "models.yaml", "models.a.litellm_model", "Field required"),
        ("models:\n  a: {litellm_model: gpt-4o}\n", ROUTING, "models.yaml", "models.a", "provider prefix"),
        ("models:\n  a: {litellm_model: openai/gpt-4o-mini, colour: red}\n", ROUTING, "models.yaml",
         "models.a.colour", "Extra inputs"),
        ("models:\n  a: {litellm_model: openai/no-such-model-x}\n", ROUTING, "models.yaml", "models.a",
         "no price"),
        ("models:\n  a: {litellm_model: openai/x, api_base: '${NOPE_NOT_SET_VAR}'}\n", ROUTING, "models.yaml",
         "models.a.api_base", "NOPE_NOT_SET_VAR is not set"),
    ],
)
def test_config_errors_name_file_entry_and_problem(
    tmp_path: Path, models: str, routing: str, file: str, entry: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_catalog(write(tmp_path, models, routing))
    error = caught.value
    assert error.file.endswith(file)
    assert entry in str(error)
    assert problem in error.problem


def test_missing_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(tmp_path / "nope")
    (tmp_path / "routing.yaml").write_text(ROUTING)
    with pytest.raises(ConfigError, match=r"models.yaml: <top level>: file not found"):
        load_catalog(tmp_path)


def test_an_entry_without_context_window_gets_litellms_and_the_router_checks_it(tmp_path: Path) -> None:
    from pipeline.contracts.models import CompletionRequest, SkipReason
    from pipeline.stages.route import RoutePlan, plan_route

    models = MODELS + """  set:
    litellm_model: openai/gpt-4o-mini
    context_window: 1000
  mixed:
    litellm_model: openai/gpt-4o
    deployments: [{id: big}, {id: mini, litellm_model: openai/gpt-4o-mini}]
"""
    catalog = load_catalog(write(tmp_path, models, "routes:\n  long: {candidates: [a, set]}\n"))
    assert catalog.models["a"].context_window == 128000  # LiteLLM's map: gpt-4o-mini
    assert catalog.models["set"].context_window == 1000  # what the entry says wins
    assert catalog.models["b"].context_window is None  # not in LiteLLM's map: no check, as before
    assert catalog.models["mixed"].context_window == 128000  # the smallest of its deployments'
    too_long = CompletionRequest(request_id="r", task_type="long", max_tokens=10,
                                 messages=[{"role": "user", "content": "word " * 140_000}])
    plan = plan_route(too_long, catalog)
    assert not isinstance(plan, RoutePlan)  # refused before any call: neither model can take it
    assert [(s.model, s.reason) for s in plan.skipped] == [
        ("a", SkipReason.CONTEXT_TOO_LONG), ("set", SkipReason.CONTEXT_TOO_LONG)]
