"""Template stage: turn a request that names a prompt template into one that carries messages.

Pure: the templates come from the catalog snapshot the request started with. A request without
`template` passes through unchanged. Rendered requests keep `template` (replies and usage can
tell they were templated) and take the template's max_tokens / temperature / response_format
where the request left them unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.templates import PromptTemplate
from pipeline.contracts.models import ChatMessage, CompletionRequest, ErrorCode


@dataclass(frozen=True, slots=True)
class TemplateRefusal:
    code: ErrorCode  # UNKNOWN_TEMPLATE or TEMPLATE_VARIABLES
    detail: str  # names the template and every missing / unknown / badly typed variable


def _is_allowed_value(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def apply_template(
    request: CompletionRequest, templates: Mapping[str, PromptTemplate]
) -> CompletionRequest | TemplateRefusal:
    """The request with its template rendered into `messages`, or why it cannot be."""
    name = request.template
    if name is None:
        return request
    template = templates.get(name)
    if template is None:
        known = ", ".join(sorted(templates)) or "none"
        return TemplateRefusal(ErrorCode.UNKNOWN_TEMPLATE, f"unknown template {name!r} (known: {known})")

    problems = [
        f"missing variable {var!r}" for var in template.required_variables if var not in request.variables
    ]
    problems += [
        f"unknown variable {var!r}" for var in sorted(request.variables) if var not in template.variables
    ]
    problems += [
        f"variable {var!r} must be a string, number or boolean, not {_type_name(value)}"
        for var, value in sorted(request.variables.items())
        if var in template.variables and not _is_allowed_value(value)
    ]
    if problems:
        return TemplateRefusal(ErrorCode.TEMPLATE_VARIABLES, f"template {name!r}: {'; '.join(problems)}")

    messages = [ChatMessage.model_validate(m) for m in template.render(dict(request.variables))]
    update: dict[str, Any] = {"messages": messages}
    if request.max_tokens is None and template.max_tokens is not None:
        update["max_tokens"] = template.max_tokens
    if request.temperature is None and template.temperature is not None:
        update["temperature"] = template.temperature
    if request.response_format is None and template.response_format is not None:
        update["response_format"] = template.response_format
    return request.model_copy(update=update)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
