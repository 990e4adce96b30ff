"""Per-model resilience settings: deployments, retries per error class, cooldowns, balancing.

`defaults:` in models.yaml sets them for every model; a model's `resilience:` overrides fields
(and individual error classes of `retry`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.catalog.call_params import check_params, resolve_params
from pipeline.catalog.secrets import SecretLookup, is_reference, key_source, resolve_key

#: LiteLLM provider prefixes that name the same upstream API family.
PROVIDER_ALIASES = {"ollama_chat": "ollama", "hosted_vllm": "vllm"}


def provider_of(litellm_model: str, custom_llm_provider: str | None = None) -> str:
    """The provider a call goes to: LiteLLM's `custom_llm_provider` when set, else the model prefix."""
    prefix = custom_llm_provider or litellm_model.split("/", 1)[0]
    return PROVIDER_ALIASES.get(prefix, prefix)


class RetryRule(BaseModel):
    """Retries of one error class on the same model: exponential backoff with full jitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(0, ge=0, le=20)
    base_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(8.0, ge=0)


def _default_retry() -> dict[str, RetryRule]:
    return {
        "rate_limited": RetryRule(retries=2, base_delay_s=1.0, max_delay_s=10.0),  # Retry-After wins when sent
        "server_error": RetryRule(retries=2, base_delay_s=0.5, max_delay_s=8.0),
        "connection_error": RetryRule(retries=2, base_delay_s=0.5, max_delay_s=8.0),
        "malformed_response": RetryRule(retries=1, base_delay_s=0.2, max_delay_s=2.0),
        "timeout": RetryRule(retries=1, base_delay_s=0.2, max_delay_s=2.0),  # only with retry_timeouts
        # A stream that broke after its first chunk: restarted (new stream_id) once on the same
        # model, then on the fallback.
        "stream_interrupted": RetryRule(retries=1, base_delay_s=0.2, max_delay_s=2.0),
    }


class Balancing(StrEnum):
    WEIGHTED = "weighted"
    LEAST_BUSY = "least_busy"
    LATENCY = "latency"


class ContentPolicyAction(StrEnum):
    FALLBACK = "fallback"  # another model may answer
    RETURN = "return"  # the refusal is the answer: error reply, no fallback


class Resilience(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float | None = Field(None, gt=0, description="Per-attempt timeout (default: the worker setting).")
    first_token_timeout_s: float = Field(
        30.0, gt=0, description="Streams: longest wait for the first chunk (within the per-attempt timeout).")
    stream_idle_timeout_s: float = Field(
        20.0, gt=0, description="Streams: longest silence between two chunks before the stream counts as stalled.")
    retry_timeouts: bool = Field(
        False,
        description="Retry a timed-out call on the same model. Off: a silent deployment fails over at once "
                    "and cools down after one timeout.",
    )
    retry: dict[str, RetryRule] = Field(default_factory=_default_retry)
    allowed_fails: int = Field(3, ge=1, description="Failures within fail_window_s that start a cooldown.")
    fail_window_s: float = Field(60.0, gt=0)
    cooldown_s: float = Field(30.0, ge=0)
    quota_cooldown_s: float = Field(
        600.0, ge=0,
        description="Cooldown after one quota_exceeded answer: a spent quota does not come back in seconds.",
    )
    load_balancing: Balancing = Balancing.WEIGHTED
    content_policy: ContentPolicyAction = ContentPolicyAction.FALLBACK

    def merged(self, override: dict | None) -> Resilience:
        """Field-wise override; `retry` merges per error class."""
        if not override:
            return self
        data = self.model_dump()
        for key, value in override.items():
            if key == "retry" and isinstance(value, dict):
                data["retry"] = {**data["retry"], **value}
            else:
                data[key] = value
        return Resilience.model_validate(data)

    def rule(self, error_class: str) -> RetryRule:
        return self.retry.get(error_class, RetryRule())

    def cooldown_rule(self, error_class: str) -> tuple[int, float]:
        """(failures within fail_window_s that start a cooldown, its length) for one error class:
        one quota_exceeded answer is enough, since a spent quota does not come back in seconds, and
        one timeout unless timeouts are retried."""
        if error_class == "quota_exceeded" and self.quota_cooldown_s > 0:
            return 1, self.quota_cooldown_s
        if error_class == "timeout" and not self.retry_timeouts:
            return 1, self.cooldown_s  # silent: the next request should not wait on it too
        return self.allowed_fails, self.cooldown_s


class Deployment(BaseModel):
    """One way to reach a catalog model: a provider, key or region. `name` is unique catalog-wide."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True)

    id: str
    name: str = ""
    litellm_model: str
    api_base: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = Field(None, description="A mounted secret file holding the key (read at call time).")
    api_key_ref: str | None = Field(
        None, alias="api_key", description="References only: ${NAME}, os.environ/NAME, {secret_name}.")
    drop_params: bool = Field(
        False, description="LiteLLM drops the request parameters this provider does not support; else they fail "
                           "the attempt as bad_request.")
    weight: float = Field(1.0, gt=0)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    litellm_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to LiteLLM as written (api_version, organization, extra_headers, aws_region_name, "
                    "vertex_project, custom_llm_provider, ...); credentials by reference only.")
    provider: str = Field("", description="Derived: custom_llm_provider, else the litellm_model prefix.")

    @field_validator("litellm_params", mode="after")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_params(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> Deployment:
        custom = self.litellm_params.get("custom_llm_provider")
        if custom is not None and (not isinstance(custom, str) or not custom):
            raise ValueError("litellm_params.custom_llm_provider must be a provider name, e.g. openai")
        if "/" not in self.litellm_model and custom is None:
            raise ValueError(f"litellm_model {self.litellm_model!r} must carry a provider prefix, e.g. openai/... "
                             "(or set litellm_params.custom_llm_provider)")
        if not self.provider:
            object.__setattr__(self, "provider", provider_of(self.litellm_model, custom))
        given = [f for f in ("api_key_env", "api_key_file", "api_key_ref") if getattr(self, f)]
        if len(given) > 1:
            raise ValueError("set one of api_key_env, api_key_file, api_key (got "
                             + ", ".join(g.replace("_ref", "") for g in given) + ")")
        if self.api_key_ref is not None and not is_reference(self.api_key_ref):
            # Never echo the value: it is likely a pasted key.
            raise ValueError("api_key must be a reference (${NAME}, os.environ/NAME or {secret_name}), "
                             "never the key itself: keys do not go in files")
        return self

    def key_source(self) -> str | None:
        """How the key is named (`env NAME`, `file PATH`, `secret NAME`), never its value."""
        return key_source(self)

    def call_params(self, secrets: SecretLookup | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The pass-through parameters for this call, credentials resolved now, and those credentials'
        values (for scrubbing error messages); raises SecretNotFound naming a missing reference."""
        return resolve_params(self.litellm_params, secrets)

    def api_key(self, secrets: SecretLookup | None = None) -> str | None:
        """The key now, read at call time so a rotated secret needs no reload; raises
        SecretNotFound (a LookupError naming the reference) when it does not resolve."""
        return resolve_key(self, secrets)
