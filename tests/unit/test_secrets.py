"""Provider keys by reference (`pipeline/catalog/secrets.py`): env, file, ${VAR}, os.environ/,
{secret} from a secrets directory or file; read at call time; errors name, never show, a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.catalog import ConfigError, load_catalog
from pipeline.catalog.resilience import Deployment
from pipeline.catalog.secrets import SecretNotFound, SecretSources, referenced_names, resolve

SECRET = "sk-unit-SECRETVALUE-42"


def _deployment(**fields: str) -> Deployment:
    return Deployment.model_validate({"id": "d", "name": "m", "litellm_model": "openai/gpt-4o-mini", **fields})


def test_a_key_file_is_read_at_every_call_without_its_trailing_newline(tmp_path: Path) -> None:
    key = tmp_path / "openai"
    key.write_text(SECRET + "\n")
    d = _deployment(api_key_file=str(key))
    assert d.api_key() == SECRET and d.key_source() == f"file {key}"
    key.write_text("sk-rotated\r\n")
    assert d.api_key() == "sk-rotated"  # no cache: the rotated file is used at once
    key.unlink()
    with pytest.raises(SecretNotFound, match="not found"):
        d.api_key()
    key.write_text("\n")
    with pytest.raises(SecretNotFound, match="empty"):
        d.api_key()


def test_environment_references_in_three_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_KEY", SECRET)
    assert _deployment(api_key_env="UNIT_KEY").api_key() == SECRET
    assert _deployment(api_key="os.environ/UNIT_KEY").api_key() == SECRET
    assert _deployment(api_key="${UNIT_KEY}").api_key() == SECRET
    monkeypatch.setenv("UNIT_KEY", "rotated")
    assert _deployment(api_key="os.environ/UNIT_KEY").api_key() == "rotated"
    monkeypatch.delenv("UNIT_KEY")
    for d in (_deployment(api_key_env="UNIT_KEY"), _deployment(api_key="os.environ/UNIT_KEY"),
              _deployment(api_key="${UNIT_KEY}")):
        with pytest.raises(SecretNotFound, match="environment variable UNIT_KEY is not set"):
            d.api_key()
    assert _deployment(api_key="${UNIT_KEY:-fallback}").api_key() == "fallback"


def test_secret_placeholders_from_a_directory_then_a_file(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "openai").write_text(SECRET + "\n")
    file = tmp_path / "secrets.yaml"
    file.write_text("openai: from-the-file\nanthropic: sk-ant-file\n")
    sources = SecretSources(directory, file)
    assert _deployment(api_key="{openai}").api_key(sources) == SECRET  # the directory wins
    assert _deployment(api_key="{anthropic}").api_key(sources) == "sk-ant-file"
    assert _deployment(api_key="Bearer-{anthropic}").api_key(sources) == "Bearer-sk-ant-file"
    json_file = tmp_path / "secrets.json"
    json_file.write_text(json.dumps({"openai": "sk-json"}))
    assert _deployment(api_key="{openai}").api_key(SecretSources(file=json_file)) == "sk-json"
    with pytest.raises(SecretNotFound, match="secret 'ghost' not found in PIPELINE_SECRETS_DIR") as err:
        _deployment(api_key="{ghost}").api_key(sources)
    assert SECRET not in str(err.value)
    with pytest.raises(SecretNotFound, match="no secrets source"):
        _deployment(api_key="{openai}").api_key(None)
    with pytest.raises(SecretNotFound, match="invalid secret name"):
        SecretSources(directory).secret("../etc")


def test_a_broken_secrets_file_is_named_without_quoting_it(tmp_path: Path) -> None:
    file = tmp_path / "secrets.yaml"
    file.write_text(f"openai: [{SECRET}\n")
    with pytest.raises(SecretNotFound) as err:
        SecretSources(file=file).secret("openai")
    assert "not valid YAML" in str(err.value) and SECRET not in str(err.value)
    file.write_text(f"- {SECRET}\n")
    with pytest.raises(SecretNotFound, match="must hold a mapping"):
        SecretSources(file=file).secret("openai")


def test_literal_keys_and_two_sources_are_refused_without_echoing_the_value() -> None:
    with pytest.raises(ValueError, match="never the key itself") as err:
        _deployment(api_key=SECRET)
    assert SECRET not in str(err.value)
    with pytest.raises(ValueError, match="set one of"):
        _deployment(api_key_env="A", api_key_file="/run/secrets/a")


def test_referenced_names_and_resolve() -> None:
    assert referenced_names("os.environ/X") == ["env X"]
    assert referenced_names("{a}-${B}") == ["secret a", "env B"]
    assert resolve("${B}-x", None, {"B": "b"}) == "b-x"
    with pytest.raises(SecretNotFound, match=r"secret 'a'"):
        resolve("{a}", None, {})


def _catalog(tmp_path: Path, models: str) -> Path:
    (tmp_path / "models.yaml").write_text("models:\n" + models)
    (tmp_path / "routing.yaml").write_text("default: {candidates: [m]}\n")
    return tmp_path


def test_the_catalog_keeps_key_references_for_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("UNIT_LATE_KEY", raising=False)
    cfg = _catalog(tmp_path, "  m:\n    litellm_model: openai/gpt-4o-mini\n    api_base: os.environ/UNIT_BASE\n"
                             "    api_key: ${UNIT_LATE_KEY}\n"
                             "    deployments:\n      - {id: a}\n      - {id: b, api_key_file: /run/secrets/b}\n")
    catalog = load_catalog(cfg)  # loads although UNIT_LATE_KEY is unset: it is read at call time
    a, b = catalog.models["m"].deployments
    assert a.api_base == "http://127.0.0.1:9/v1"  # LiteLLM's os.environ/ form, expanded at load
    assert a.api_key_ref == "${UNIT_LATE_KEY}" and a.key_source() == "env UNIT_LATE_KEY"
    assert b.api_key_ref is None and b.api_key_file == "/run/secrets/b"  # its own key, nothing inherited
    monkeypatch.setenv("UNIT_LATE_KEY", SECRET)
    assert a.api_key() == SECRET and SECRET not in repr(catalog.models["m"])
    monkeypatch.delenv("UNIT_BASE")
    with pytest.raises(ConfigError, match=r"models\.m\.api_base: environment variable UNIT_BASE is not set"):
        load_catalog(cfg)


def test_a_literal_key_in_models_yaml_is_a_config_error(tmp_path: Path) -> None:
    cfg = _catalog(tmp_path, f"  m: {{litellm_model: openai/gpt-4o-mini, api_key: {SECRET}}}\n")
    with pytest.raises(ConfigError, match="never the key itself") as err:
        load_catalog(cfg)
    assert SECRET not in str(err.value)


def test_the_simulator_checks_keys_by_digest_only() -> None:
    import hashlib

    from pipeline.simulator.faults import SimulatorConfig

    config = SimulatorConfig(api_keys={"keyed-*": [hashlib.sha256(SECRET.encode()).hexdigest()]})
    assert config.key_check("keyed-a", SECRET) == "passed"
    assert config.key_check("keyed-a", "sk-other") == "rejected" and config.key_check("keyed-a", None) == "rejected"
    assert config.key_check("gpt-4o-mini", None) == "unchecked"
    assert SECRET not in config.model_dump_json()
