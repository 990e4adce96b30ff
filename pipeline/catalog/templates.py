"""Named prompt templates (`config/templates.yaml`): messages with `{variable}` placeholders.

A request names a template and gives its variables instead of sending messages; the template
stage (`pipeline/stages/template.py`) renders the messages. Placeholders use Python `str.format`
syntax restricted to plain names: `{ticket}`; `{{` and `}}` are literal braces. Everything else
(`{}`, `{0}`, `{a.b}`, `{a[0]}`, `{x!r}`, `{x:>10}`) is rejected when the file loads, as are
placeholders naming undeclared variables and declared variables no message uses. The file is
optional: without it there are no templates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from string import Formatter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.yaml_loader import load_yaml_mapping
from pipeline.contracts.models import ResponseFormat

#: A value a variable may take (and a default may have): inserted with str(), booleans as true/false.
VariableValue = str | bool | int | float

_FORMATTER = Formatter()


class TemplateVariable(BaseModel):
    """One declared variable; without a default the request must give it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    default: VariableValue | None = Field(default=None, description="Used when the request omits it.")

    @property
    def required(self) -> bool:
        return self.default is None


class TemplateMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(min_length=1, description="Text with {variable} placeholders; {{ and }} are literal.")


class PromptTemplate(BaseModel):
    """A named prompt: its messages, the variables they use, and default completion settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    variables: dict[str, TemplateVariable] = Field(default_factory=dict)
    messages: list[TemplateMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0, description="Applied when the request sets none.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Applied when the request sets none.")
    response_format: ResponseFormat | None = Field(default=None, description="Applied when the request sets none.")

    @field_validator("variables", mode="before")
    @classmethod
    def _bare_variables(cls, value: Any) -> Any:
        """`ticket:` with no settings declares a required variable."""
        if isinstance(value, dict):
            return {name: {} if body is None else body for name, body in value.items()}
        return {} if value is None else value

    @property
    def required_variables(self) -> tuple[str, ...]:
        return tuple(name for name, var in self.variables.items() if var.required)

    def render(self, values: dict[str, VariableValue]) -> list[dict[str, str]]:
        """Messages with every placeholder replaced by its value (or default), as role/content dicts.

        `values` must cover every required variable; values are inserted as text and never
        interpreted again, so a value containing `{x}` stays literal.
        """
        merged = {name: var.default for name, var in self.variables.items() if var.default is not None}
        merged.update(values)
        rendered = []
        for message in self.messages:
            parts: list[str] = []
            for literal, name in placeholders(message.content):
                parts.append(literal)
                if name is not None:
                    parts.append(format_value(merged[name]))
            rendered.append({"role": message.role, "content": "".join(parts)})
        return rendered


class _TemplatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    templates: dict[str, PromptTemplate] = Field(default_factory=dict)

    @field_validator("templates", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value


def format_value(value: VariableValue) -> str:
    """How a variable value is written into a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def placeholders(content: str) -> Iterator[tuple[str, str | None]]:
    """(literal text, variable name or None) pairs of an already validated content string."""
    for literal, name, _spec, _conversion in _FORMATTER.parse(content):
        yield literal, name


def _check_content(content: str) -> tuple[list[str], str | None]:
    """The variable names a content string uses, or the first problem with its placeholders."""
    try:
        parsed = list(_FORMATTER.parse(content))
    except ValueError as exc:
        return [], f"invalid placeholder syntax: {exc} (write {{{{ and }}}} for literal braces)"
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "":
            return [], f"positional placeholder {written!r} is not allowed; name a variable, e.g. {{ticket}}"
        if not name.isidentifier():
            return [], f"placeholder {written!r} must be a plain variable name (no attributes, indexes or spaces)"
        if spec or conversion:
            return [], f"placeholder {written!r} may not have a conversion or format spec; write {{{name}}}"
        names.append(name)
    return names, None


def _check_template(file: Path, name: str, template: PromptTemplate) -> None:
    entry = f"templates.{name}"
    for var in template.variables:
        if not var.isidentifier():
            raise ConfigError(file, f"{entry}.variables.{var}", "variable names must be plain identifiers, e.g. ticket")
    declared = ", ".join(sorted(template.variables)) or "none"
    used: set[str] = set()
    for i, message in enumerate(template.messages):
        where = f"{entry}.messages[{i}].content"
        names, problem = _check_content(message.content)
        if problem:
            raise ConfigError(file, where, problem)
        for var in names:
            if var not in template.variables:
                raise ConfigError(file, where, f"unknown variable {var!r} (declared: {declared})")
        used.update(names)
    for var in template.variables:
        if var not in used:
            raise ConfigError(file, f"{entry}.variables.{var}", "declared but no message uses it")


def load_templates(file: Path) -> dict[str, PromptTemplate]:
    """Parse and check `templates.yaml`; a missing file means no templates."""
    file = Path(file)
    if not file.exists():
        return {}
    raw = load_yaml_mapping(file)
    try:
        parsed = _TemplatesFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.from_validation(file, exc) from None
    for name, template in parsed.templates.items():
        _check_template(file, name, template)
    return dict(parsed.templates)


__all__ = [
    "PromptTemplate",
    "TemplateMessage",
    "TemplateVariable",
    "VariableValue",
    "format_value",
    "load_templates",
    "placeholders",
]
