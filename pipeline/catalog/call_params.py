"""A deployment's pass-through LiteLLM call parameters (`litellm_params`): what may be set, and secrets.

Anything LiteLLM accepts for a call (api_version, organization, extra_headers, aws_region_name,
vertex_project, ...) goes to `litellm.acompletion` as written, except the parameters the pipeline
owns (the model, the messages, retries, streaming, the timeout): those would silently change how a
call is made, so they are refused at load. A parameter whose name says it holds a secret
(`aws_secret_access_key`, `azure_ad_token`, `client_secret`, ...) follows the `api_key` rules: it
must be a reference (`${NAME}`, `os.environ/NAME`, `{secret_name}`), resolved at call time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.catalog.secrets import SecretLookup, is_reference, resolve

#: Parameters the pipeline sets itself, with what to use instead.
OWNED_PARAMS: dict[str, str] = {
    "model": "the deployment's litellm_model",
    "messages": "the request",
    "input": "the request",
    "stream": "the request's stream flag",
    "stream_options": "the pipeline (it asks for usage itself)",
    "num_retries": "resilience.retry (retries are the pipeline's)",
    "max_retries": "resilience.retry (retries are the pipeline's)",
    "retry_policy": "resilience.retry",
    "timeout": "resilience.timeout_s",
    "request_timeout": "resilience.timeout_s",
    "stream_timeout": "resilience.first_token_timeout_s",
    "api_key": "the deployment's api_key / api_key_env / api_key_file",
    "api_base": "the deployment's api_base",
    "base_url": "the deployment's api_base",
    "drop_params": "the deployment's drop_params",
    "rpm": "the deployment's rpm",
    "tpm": "the deployment's tpm",
    "weight": "the deployment's weight",
    "fallbacks": "the model's fallbacks",
    "context_window_fallbacks": "the model's context_window_fallbacks",
    "content_policy_fallbacks": "the model's content_policy_fallbacks",
    "client": "the pipeline (it manages HTTP clients)",
    "mock_response": "the provider simulator",
    "metadata": "the request's metadata",
    "callbacks": "the pipeline's own metrics and usage rows",
    "logger_fn": "the pipeline's own logging",
}

#: A name segment that says the value is a credential (`api_key`, `aws_session_token`, `client_secret`).
#: Header names count too: `x-api-key`, `Authorization`, `Cookie`.
_SECRET_NAME = re.compile(r"(^|[_-])(key|secret|token|password|passphrase|credentials?)([_-]|$)"
                          r"|^(proxy-)?authorization$|^cookie$", re.IGNORECASE)


def is_secret_param(name: str) -> bool:
    """Whether a parameter (or header) name says its value is a credential."""
    return bool(_SECRET_NAME.search(name))


def defer_secret(name: str) -> bool:
    """For the YAML loader: keep such values as written (references resolved at call time, not at load).
    `api_key_env` and `api_key_file` name where a key is, not the key: they are interpolated as usual."""
    return name not in ("api_key_env", "api_key_file") and is_secret_param(name)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters, validated; ValueError names the first offending parameter, never a secret value."""
    checked: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"litellm_params: parameter names must be strings (got {name!r})")
        if name in OWNED_PARAMS:
            raise ValueError(f"litellm_params.{name} is set by the pipeline; use {OWNED_PARAMS[name]} instead")
        if is_secret_param(name):
            _check_reference(f"litellm_params.{name}", value)
        elif name == "extra_headers":
            _check_headers(value)
        checked[name] = value
    return checked


def _check_reference(where: str, value: Any) -> None:
    if not isinstance(value, str) or not is_reference(value):
        # Never echo the value: it is likely a pasted credential.
        raise ValueError(f"{where} holds a credential: it must be a reference (${{NAME}}, os.environ/NAME or "
                         "{secret_name}), never the value itself")


def _check_headers(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError("litellm_params.extra_headers must be a mapping of header name: value")
    for header, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"litellm_params.extra_headers.{header} must be a string")
        if is_secret_param(str(header)):
            _check_reference(f"litellm_params.extra_headers.{header}", text)


def resolve_params(params: Mapping[str, Any], secrets: SecretLookup | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The parameters to send now, with every credential reference resolved, and the resolved
    values (so error messages can be scrubbed of them). Raises SecretNotFound naming the reference."""
    resolved: dict[str, Any] = {}
    found: list[str] = []
    for name, value in params.items():
        if is_secret_param(name) and isinstance(value, str):
            resolved[name] = resolve(value, secrets)
            found.append(resolved[name])
        elif name == "extra_headers" and isinstance(value, Mapping):
            headers = {}
            for header, text in value.items():
                if is_secret_param(str(header)) or is_reference(str(text)):
                    headers[header] = resolve(str(text), secrets)
                    if is_secret_param(str(header)):
                        found.append(headers[header])
                else:
                    headers[header] = text
            resolved[name] = headers
        else:
            resolved[name] = value
    return resolved, tuple(v for v in found if v)

