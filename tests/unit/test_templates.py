"""Prompt templates: load-time checks name file, entry and problem; rendering is literal and safe."""

import os
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import (
    TEMPLATES_FILE,
    Catalog,
    ConfigError,
    PromptTemplate,
    load_catalog,
    load_templates,
)
from pipeline.catalog.live import LiveCatalog
from pipeline.catalog.routing import RoutingPolicy
from pipeline.contracts.models import ChatMessage, CompletionRequest, ErrorCode, ResponseFormat
from pipeline.stages.template import TemplateRefusal, apply_template

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"

TEMPLATES = """
templates:
  summarize-ticket:
    description: Summarise a support ticket.
    variables:
      ticket: {description: The ticket text}
      language: {description: Output language, default: English}
    messages:
      - {role: system, content: "You summarise support tickets in {language}."}
      - {role: user, content: "Summarise this ticket:\\n{ticket}"}
    max_tokens: 300
    temperature: 0.2
    response_format: {type: json_object}
  plain:
    messages:
      - {role: user, content: "Say {{hello}} to {name}, {name}!"}
    variables:
      name:
  flags:
    variables:
      loud: {default: true}
      count: {default: 3}
      ratio: {}
    messages:
      - {role: developer, content: "loud={loud} count={count} ratio={ratio}"}
"""


def templates_from(tmp_path: Path, text: str = TEMPLATES) -> dict[str, PromptTemplate]:
    file = tmp_path / "templates.yaml"
    file.write_text(text)
    return load_templates(file)


def one(body: str) -> str:
    """A templates file holding one template `t` with the given (indented) body."""
    return "templates:\n  t:\n" + "\n".join(f"    {line}" for line in body.strip().splitlines()) + "\n"


def request(template: str | None = "summarize-ticket", **fields: Any) -> CompletionRequest:
    if template is None:
        fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return CompletionRequest(request_id="r-1", task_type="summarize", template=template, **fields)


# --- loading ----------------------------------------------------------------------------------


def test_loads_templates(tmp_path: Path) -> None:
    templates = templates_from(tmp_path)
    assert set(templates) == {"summarize-ticket", "plain", "flags"}
    t = templates["summarize-ticket"]
    assert t.required_variables == ("ticket",)
    assert t.variables["language"].default == "English"
    assert [m.role for m in t.messages] == ["system", "user"]
    assert t.max_tokens == 300 and t.temperature == 0.2
    assert t.response_format == ResponseFormat(type="json_object")
    assert templates["plain"].required_variables == ("name",)  # `name:` with no settings
    assert templates["flags"].variables["loud"].default is True
    assert templates["flags"].variables["count"].default == 3


@pytest.mark.parametrize(
    "body, message",
    [
        (
            """
            variables: {ticket: {}, language: {default: English}}
            messages:
              - {role: system, content: "In {language}."}
              - {role: user, content: "Summarise:\\n{tickt}"}
            """,
            "templates.t.messages[1].content: unknown variable 'tickt' (declared: language, ticket)",
        ),
        (
            'messages: [{role: user, content: "{x}"}]',
            "templates.t.messages[0].content: unknown variable 'x' (declared: none)",
        ),
        (
            """
            variables: {ticket: {}, language: {default: English}}
            messages: [{role: user, content: "{ticket}"}]
            """,
            "templates.t.variables.language: declared but no message uses it",
        ),
        (
            "variables: {a: {}}\nmessages: []",
            "templates.t.messages: List should have at least 1 item after validation, not 0",
        ),
        (
            "description: no messages",
            "templates.t.messages: Field required",
        ),
        (
            'messages: [{role: tool, content: "x"}]',
            "templates.t.messages[0].role: Input should be 'system', 'user', 'assistant' or 'developer'",
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{}"}]',
            ("templates.t.messages[0].content: positional placeholder '{}' is not allowed; name a variable,"
            " e.g. {ticket}"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{0} {a}"}]',
            ("templates.t.messages[0].content: placeholder '{0}' must be a plain variable name"
            " (no attributes, indexes or spaces)"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a.real}"}]',
            ("templates.t.messages[0].content: placeholder '{a.real}' must be a plain variable name"
            " (no attributes, indexes or spaces)"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a[0]}"}]',
            ("templates.t.messages[0].content: placeholder '{a[0]}' must be a plain variable name"
            " (no attributes, indexes or spaces)"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a!r}"}]',
            ("templates.t.messages[0].content: placeholder '{a!r}' may not have a conversion or format spec;"
            " write {a}"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a:>10}"}]',
            ("templates.t.messages[0].content: placeholder '{a:>10}' may not have a conversion or format spec;"
            " write {a}"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a} {"}]',
            ("templates.t.messages[0].content: invalid placeholder syntax: Single '{' encountered in format"
            " string (write {{ and }} for literal braces)"),
        ),
        (
            'variables: {a: {}}\nmessages: [{role: user, content: "{a} }"}]',
            ("templates.t.messages[0].content: invalid placeholder syntax: Single '}' encountered in format"
            " string (write {{ and }} for literal braces)"),
        ),
        (
            'variables: {a-b: {}}\nmessages: [{role: user, content: "x"}]',
            "templates.t.variables.a-b: variable names must be plain identifiers, e.g. ticket",
        ),
        (
            'variables: {a: {required: true}}\nmessages: [{role: user, content: "{a}"}]',
            "templates.t.variables.a.required: Extra inputs are not permitted",
        ),
        (
            'messages: [{role: user, content: "x"}]\ncolour: red',
            "templates.t.colour: Extra inputs are not permitted",
        ),
        (
            'messages: [{role: user, content: "x"}]\nmax_tokens: 0',
            "templates.t.max_tokens: Input should be greater than 0",
        ),
        (
            'messages: [{role: user, content: "x"}]\nresponse_format: {type: json_schema}',
            "templates.t.response_format: Value error, type json_schema needs json_schema: {name, schema}",
        ),
    ],
)
def test_load_errors_name_file_entry_and_problem(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        templates_from(tmp_path, one(textwrap.dedent(body)))
    assert caught.value.file.endswith("templates.yaml")
    assert str(caught.value) == f"{tmp_path / 'templates.yaml'}: {message}"


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"templates.yaml: <top level>: expected a mapping"):
        templates_from(tmp_path, "- a list\n")
    with pytest.raises(ConfigError, match=r"templates.yaml: line .*: invalid YAML"):
        templates_from(tmp_path, "templates: [1, 2\n")
    with pytest.raises(ConfigError, match=r"templates.yaml: templats: Extra inputs are not permitted"):
        templates_from(tmp_path, "templats: {}\n")


def test_missing_or_empty_file_means_no_templates(tmp_path: Path) -> None:
    assert load_templates(tmp_path / "templates.yaml") == {}
    assert templates_from(tmp_path, "") == {}
    assert templates_from(tmp_path, "templates:\n") == {}


def test_env_interpolation_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPLATE_TEST_BRAND", "Acme")
    t = templates_from(
        tmp_path, one('variables: {q: {}}\nmessages: [{role: user, content: "${TEMPLATE_TEST_BRAND}: {q}"}]')
    )
    assert t["t"].messages[0].content == "Acme: {q}"


# --- rendering --------------------------------------------------------------------------------


def test_request_without_template_is_returned_unchanged(tmp_path: Path) -> None:
    r = request(None)
    assert apply_template(r, templates_from(tmp_path)) is r


def test_renders_messages_and_keeps_template(tmp_path: Path) -> None:
    r = request(variables={"ticket": "Order #42 {never} arrived", "language": "German"})
    out = apply_template(r, templates_from(tmp_path))
    assert isinstance(out, CompletionRequest)
    assert out.messages == [
        ChatMessage(role="system", content="You summarise support tickets in German."),
        ChatMessage(role="user", content="Summarise this ticket:\nOrder #42 {never} arrived"),
    ]
    assert out.template == "summarize-ticket"
    assert out.variables == r.variables
    assert out.request_id == "r-1" and out.task_type == "summarize"


def test_variable_defaults(tmp_path: Path) -> None:
    out = apply_template(request(variables={"ticket": "t"}), templates_from(tmp_path))
    assert isinstance(out, CompletionRequest)
    assert out.messages[0].content == "You summarise support tickets in English."


def test_template_defaults_fill_only_unset_settings(tmp_path: Path) -> None:
    templates = templates_from(tmp_path)
    out = apply_template(request(variables={"ticket": "t"}), templates)
    assert isinstance(out, CompletionRequest)
    assert (out.max_tokens, out.temperature) == (300, 0.2)
    assert out.response_format == ResponseFormat(type="json_object")

    text = ResponseFormat(type="text")
    out = apply_template(
        request(variables={"ticket": "t"}, max_tokens=50, temperature=0.0, response_format=text), templates
    )
    assert isinstance(out, CompletionRequest)
    assert (out.max_tokens, out.temperature, out.response_format) == (50, 0.0, text)

    out = apply_template(request("plain", variables={"name": "x"}), templates)
    assert isinstance(out, CompletionRequest)
    assert (out.max_tokens, out.temperature, out.response_format) == (None, None, None)


def test_literal_braces_and_value_types(tmp_path: Path) -> None:
    templates = templates_from(tmp_path)
    out = apply_template(request("plain", variables={"name": "Ann"}), templates)
    assert isinstance(out, CompletionRequest)
    assert out.messages == [ChatMessage(role="user", content="Say {hello} to Ann, Ann!")]

    out = apply_template(request("flags", variables={"ratio": 0.5}), templates)
    assert isinstance(out, CompletionRequest)
    assert out.messages[0].content == "loud=true count=3 ratio=0.5"
    assert out.messages[0].role == "developer"
    out = apply_template(request("flags", variables={"ratio": False, "loud": False, "count": -7}), templates)
    assert isinstance(out, CompletionRequest)
    assert out.messages[0].content == "loud=false count=-7 ratio=false"


@pytest.mark.parametrize(
    "value",
    ["{name}", "{0}", "{}", "{{name}}", "{name.__class__}", "{ticket!r:>99}", "${HOME}", "}{", "%(name)s"],
)
def test_values_are_never_reinterpreted(tmp_path: Path, value: str) -> None:
    out = apply_template(request("plain", variables={"name": value}), templates_from(tmp_path))
    assert isinstance(out, CompletionRequest)
    assert out.messages[0].content == f"Say {{hello}} to {value}, {value}!"


def test_unknown_template(tmp_path: Path) -> None:
    refusal = apply_template(request("summarise-ticket"), templates_from(tmp_path))
    assert refusal == TemplateRefusal(
        ErrorCode.UNKNOWN_TEMPLATE, "unknown template 'summarise-ticket' (known: flags, plain, summarize-ticket)"
    )
    refusal = apply_template(request("x"), {})
    assert refusal == TemplateRefusal(ErrorCode.UNKNOWN_TEMPLATE, "unknown template 'x' (known: none)")


def test_variable_problems_are_all_named(tmp_path: Path) -> None:
    templates = templates_from(tmp_path)
    refusal = apply_template(request(variables={"tickt": "x"}), templates)
    assert refusal == TemplateRefusal(
        ErrorCode.TEMPLATE_VARIABLES, "template 'summarize-ticket': missing variable 'ticket'; unknown variable 'tickt'"
    )
    refusal = apply_template(request(), templates)
    assert refusal == TemplateRefusal(
        ErrorCode.TEMPLATE_VARIABLES, "template 'summarize-ticket': missing variable 'ticket'",
    )
    refusal = apply_template(
        request(variables={"ticket": {"text": "x"}, "language": ["en"], "extra": 1, "zz": None}), templates
    )
    assert isinstance(refusal, TemplateRefusal)
    assert refusal.code is ErrorCode.TEMPLATE_VARIABLES
    assert refusal.detail == (
        "template 'summarize-ticket': unknown variable 'extra'; unknown variable 'zz'; "
        "variable 'language' must be a string, number or boolean, not a list; "
        "variable 'ticket' must be a string, number or boolean, not an object"
    )
    refusal = apply_template(request(variables={"ticket": None}), templates)
    assert isinstance(refusal, TemplateRefusal)
    assert refusal.detail == (
        "template 'summarize-ticket': variable 'ticket' must be a string, number or boolean, not null"
    )


def test_rendered_request_serialises(tmp_path: Path) -> None:
    """The rendered request dumps like any other, messages, template and variables included."""
    out = apply_template(request(variables={"ticket": "t"}), templates_from(tmp_path))
    assert isinstance(out, CompletionRequest)
    dumped = out.model_dump(mode="json", exclude_none=True)
    assert dumped["template"] == "summarize-ticket"
    assert dumped["messages"][1] == {"role": "user", "content": "Summarise this ticket:\nt"}


# --- catalog integration ----------------------------------------------------------------------


def test_shipped_templates_load_and_render() -> None:
    catalog = load_catalog(REPO_CONFIG)
    assert {"summarize-ticket", "classify-sentiment", "extract-entities"} <= set(catalog.templates)
    routed = set(catalog.routing.routes)
    assert {"summarize", "classify", "extract"} <= routed
    sentiment = catalog.templates["classify-sentiment"].response_format
    assert sentiment is not None and sentiment.json_schema is not None
    assert sentiment.json_schema.json_schema["required"] == ["sentiment"]
    out = apply_template(
        CompletionRequest(
            request_id="r", task_type="classify", template="classify-sentiment", variables={"text": "Great {stuff}"}
        ),
        catalog.templates,
    )
    assert isinstance(out, CompletionRequest)
    assert out.messages is not None and out.messages[-1].content == "Great {stuff}"
    assert '{"sentiment": "neutral"}' in str(out.messages[0].content)
    assert out.response_format == sentiment


def test_catalog_without_templates_file(tmp_path: Path) -> None:
    config = shutil.copytree(REPO_CONFIG, tmp_path / "config")
    (config / TEMPLATES_FILE).unlink()
    assert load_catalog(config).templates == {}
    assert Catalog(models={}, routing=RoutingPolicy()).templates == {}


def test_catalog_rejects_a_bad_templates_file(tmp_path: Path) -> None:
    config = shutil.copytree(REPO_CONFIG, tmp_path / "config")
    (config / TEMPLATES_FILE).write_text(one('messages: [{role: user, content: "{ghost}"}]'))
    with pytest.raises(ConfigError) as caught:
        load_catalog(config)
    assert str(caught.value) == (
        f"{config / TEMPLATES_FILE}: templates.t.messages[0].content: unknown variable 'ghost' (declared: none)"
    )


def test_live_catalog_reloads_when_templates_change(tmp_path: Path) -> None:
    config = shutil.copytree(REPO_CONFIG, tmp_path / "config")
    (config / TEMPLATES_FILE).unlink()
    live = LiveCatalog(config)
    assert live().templates == {}
    assert not live.reload_if_changed()

    file = config / TEMPLATES_FILE
    file.write_text(one('variables: {q: {}}\nmessages: [{role: user, content: "{q}"}]'))
    assert live.reload_if_changed()
    assert set(live().templates) == {"t"}

    good = live()
    file.write_text(one('messages: [{role: user, content: "{q}"}]'))
    stamp = time.time_ns() + 5_000_000_000  # a distinct mtime even on coarse-grained filesystems
    os.utime(file, ns=(stamp, stamp))
    assert not live.reload_if_changed()
    assert live() is good
    assert live.last_error is not None and "unknown variable 'q'" in live.last_error
