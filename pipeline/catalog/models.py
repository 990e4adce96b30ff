"""The model catalog (`config/models.yaml`): what each named model is and how to reach it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.catalog.call_params import defer_secret
from pipeline.catalog.errors import ConfigError
from pipeline.catalog.resilience import Deployment, Resilience
from pipeline.catalog.secrets import SecretLookup, resolve_key
from pipeline.catalog.yaml_loader import load_yaml_mapping

#: The ways a catalog entry names its key (as written in models.yaml).
_KEY_FIELDS = ("api_key_env", "api_key_file", "api_key")
#: A model's fallback lists: the general one, then the two LiteLLM tries only for their kind of failure.
FALLBACK_FIELDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


class Price(BaseModel):
    """USD per million tokens; overrides LiteLLM's price map for this model.

    The optional rates price the usage details a provider reports; unset, such tokens are priced
    at the plain input (cache, audio input) or output (reasoning, audio output) rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(
        default=None, ge=0, description="Cached input (OpenAI cached_tokens, Anthropic cache_read_input_tokens).")
    cache_write_per_mtok: float | None = Field(
        default=None, ge=0, description="Anthropic cache_creation_input_tokens.")
    reasoning_per_mtok: float | None = Field(default=None, ge=0, description="Reasoning output tokens.")
    audio_input_per_mtok: float | None = Field(default=None, ge=0)
    audio_output_per_mtok: float | None = Field(default=None, ge=0)
    image_input_per_mtok: float | None = Field(default=None, ge=0)
    per_query: float | None = Field(
        default=None, ge=0, description="USD per query, for rerank models (Cohere: per search unit, one query of up "
                                        "to 100 documents); unset: LiteLLM's input_cost_per_query.")

    @classmethod
    def from_litellm(cls, rates: Mapping[str, float]) -> Price:
        """From LiteLLM's per-token rate names (a model_info, its price map): x 1e6, rounded to
        1e-9 USD per million (float noise), output 0 when none is given (embedding models)."""
        fields = {LITELLM_RATE_FIELDS[k]: round(float(v) * 1e6, 9)
                  for k, v in rates.items() if k in LITELLM_RATE_FIELDS}
        return cls.model_validate({"output_per_mtok": 0.0, **fields})


#: LiteLLM's per-token rate names (model_info, its price map) -> the Price fields they set (x 1e6).
LITELLM_RATE_FIELDS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cache_read_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
    "output_cost_per_reasoning_token": "reasoning_per_mtok",
    "input_cost_per_audio_token": "audio_input_per_mtok",
    "output_cost_per_audio_token": "audio_output_per_mtok",
    "input_cost_per_image_token": "image_input_per_mtok",
}


class ModelSpec(BaseModel):
    """One catalog entry. `name` is what requests and routes refer to."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True)

    name: str
    litellm_model: str = Field(description="LiteLLM model string, e.g. openai/gpt-4o-mini.")
    api_base: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key)."
    )
    api_key_file: str | None = Field(default=None, description="A mounted secret file holding the key.")
    api_key_ref: str | None = Field(
        default=None, alias="api_key", description="References only: ${NAME}, os.environ/NAME, {secret_name}."
    )
    provider: str = ""
    context_window: int | None = Field(default=None, gt=0)
    price: Price | None = None
    capabilities: frozenset[str] = frozenset()
    quality: int = Field(default=3, ge=1, le=5, description="Relative answer quality, for cost_preference.")
    disabled: bool = False
    drop_params: bool = Field(
        default=False, description="Let LiteLLM drop request parameters the provider does not support (top_p, seed, "
                                   "...); without it such a request fails as bad_request. Deployments inherit it.")
    deployments: tuple[Deployment, ...] = Field(
        default=(), description="Several ways to reach this model; default: one, from the fields above."
    )
    resilience: Resilience = Field(default_factory=Resilience)
    litellm_params: dict[str, Any] = Field(
        default_factory=dict, description="LiteLLM call parameters passed through (api_version, organization, "
                                          "extra_headers, ...); a deployment's own are merged over these.")
    # Per-model fallbacks (issue 18): what LiteLLM router_settings.fallbacks maps onto. Tried after
    # this model when a request names it as its explicit `model` and carries no `fallbacks` of its own.
    fallbacks: tuple[str, ...] = Field(
        default=(), max_length=8,
        description="Catalog models tried, in order, after this one when a request names it as its explicit "
                    "model and carries no fallbacks of its own (a request's fallbacks: [] means none). Every "
                    "name must be a catalog model other than this one.",
    )
    # Conditional fallbacks (LiteLLM's context_window_fallbacks / content_policy_fallbacks): tried
    # after the general ones, and only when a failure of their kind happened earlier in the chain.
    context_window_fallbacks: tuple[str, ...] = Field(
        default=(), max_length=8,
        description="Catalog models tried after this one (and its fallbacks) only when the prompt did not fit a "
                    "model before them: skipped as context_too_long or answered context_window_exceeded. Each "
                    "must still fit the prompt. Same rules as fallbacks.",
    )
    content_policy_fallbacks: tuple[str, ...] = Field(
        default=(), max_length=8,
        description="Catalog models tried after this one (and its fallbacks) only after a content-policy refusal "
                    "(resilience.content_policy: return stops at the refusal instead). Same rules as fallbacks.",
    )

    @model_validator(mode="before")
    @classmethod
    def _deployments(cls, data: dict) -> dict:
        """Deployments inherit the model's litellm_model/api_base/api_key_env; ids become 'model@id'."""
        if not isinstance(data, dict):
            return data
        name = data.get("name", "")
        raw = data.get("deployments") or [{"id": "default"}]
        inherited = {k: data[k] for k in ("litellm_model", "api_base", "drop_params", *_KEY_FIELDS)
                     if data.get(k) is not None}
        params = data.get("litellm_params") or {}
        data = {**data, "deployments": [
            {**_inherit(inherited, d), **d, "name": f"{name}@{d.get('id', i)}" if data.get("deployments") else name,
             "litellm_params": _merged_params(params, d.get("litellm_params"))}
            if isinstance(d, dict) else d
            for i, d in enumerate(raw)
        ]}
        return data

    @model_validator(mode="after")
    def _derive_provider(self) -> ModelSpec:
        """The model's provider is its first deployment's; each deployment keeps its own (replies and
        usage rows name the one that served)."""
        if ("/" not in self.litellm_model and not self.litellm_params.get("custom_llm_provider")
                and all(d.litellm_model != self.litellm_model for d in self.deployments)):
            raise ValueError(f"litellm_model {self.litellm_model!r} must carry a provider prefix, e.g. openai/...")
        if len({d.id for d in self.deployments}) != len(self.deployments):
            raise ValueError("deployment ids must be unique within a model")
        if not self.provider:
            object.__setattr__(self, "provider", self.deployments[0].provider)
        return self

    def api_key(self, secrets: SecretLookup | None = None) -> str | None:
        """The key at call time (env, file or reference), so rotating a secret needs no reload."""
        return resolve_key(self, secrets)


def _merged_params(model: object, deployment: object) -> object:
    """A deployment's litellm_params over the model's (a non-mapping is left for validation to name)."""
    if deployment is None:
        return model
    if isinstance(model, dict) and isinstance(deployment, dict):
        return {**model, **deployment}
    return deployment


def _inherit(inherited: dict, deployment: dict) -> dict:
    """A deployment naming its own key (any of the key fields) inherits none of the model's."""
    if any(deployment.get(k) is not None for k in _KEY_FIELDS):
        return {k: v for k, v in inherited.items() if k not in _KEY_FIELDS}
    return inherited


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict = Field(default_factory=dict, description="Resilience settings for every model.")
    models: dict[str, dict] = Field(min_length=1)


def load_models(file: Path) -> dict[str, ModelSpec]:
    """Parse and validate `models.yaml`; every model must have a known price."""
    return parse_models(load_yaml_mapping(file, deferred=defer_secret, litellm_env=True), file)


def parse_models(raw: dict[str, Any], file: Path | str) -> dict[str, ModelSpec]:
    """Validate a models.yaml mapping (already interpolated); errors name `file` and the entry."""
    from pipeline.transport.model_info import token_prices  # local: litellm import is slow

    try:
        parsed = _CatalogFile.model_validate(raw)
        base = Resilience().merged(parsed.defaults)
    except ValidationError as exc:
        raise ConfigError.from_validation(file, exc, prefix="defaults" if "defaults" in str(exc) else "") from None
    entries = parsed.models
    models: dict[str, ModelSpec] = {}
    for name, body in entries.items():
        if not isinstance(body, dict):
            raise ConfigError(file, f"models.{name}", "expected a mapping of model settings")
        try:
            resilience = base.merged(body.get("resilience"))
            spec = ModelSpec.model_validate({**body, "name": name, "resilience": resilience})
        except ValidationError as exc:
            raise ConfigError.from_validation(file, exc, prefix=f"models.{name}") from None
        unpriced = [d.litellm_model for d in spec.deployments if token_prices(d.litellm_model) is None]
        if spec.price is None and (unpriced or token_prices(spec.litellm_model) is None):
            raise ConfigError(
                file,
                f"models.{name}",
                f"LiteLLM has no price for {(unpriced or [spec.litellm_model])[0]!r}; "
                "set price: {input_per_mtok, output_per_mtok}"
                " (0 for free local models) so its cost can be accounted",
            )
        _check_query_price(file, name, spec)
        models[name] = _with_known_window(spec)
    _check_fallbacks(file, models)
    return models


def _with_known_window(spec: ModelSpec) -> ModelSpec:
    """An entry without `context_window` gets LiteLLM's (its map's max input tokens; the smallest
    of its deployments' when they differ), so routing checks the prompt fits; unknown stays None."""
    if spec.context_window is not None:
        return spec
    from pipeline.transport.model_info import max_input_tokens  # local: litellm import is slow

    windows = [max_input_tokens(d.litellm_model) for d in spec.deployments]
    if not windows or None in windows:
        return spec
    return spec.model_copy(update={"context_window": min(w for w in windows if w is not None)})


def _check_query_price(file: Path | str, name: str, spec: ModelSpec) -> None:
    """A rerank model is billed per query: LiteLLM must know that price, or the entry must set it."""
    from pipeline.transport.model_info import query_price  # local: litellm import is slow

    if "rerank" not in spec.capabilities or (spec.price is not None and spec.price.per_query is not None):
        return
    unpriced = [m for m in (spec.litellm_model, *(d.litellm_model for d in spec.deployments)) if query_price(m) is None]
    if unpriced:
        raise ConfigError(file, f"models.{name}.price.per_query",
                          f"LiteLLM has no per-query price for {unpriced[0]!r}; set price.per_query (USD per search "
                          "unit) so its reranks can be accounted")


def _check_fallbacks(file: Path | str, models: dict[str, ModelSpec]) -> None:
    """Every per-model fallback list names other catalog models, each once (checked once all models are parsed)."""
    for name, spec in models.items():
        for key in FALLBACK_FIELDS:
            targets: tuple[str, ...] = getattr(spec, key)
            if len(set(targets)) != len(targets):
                raise ConfigError(file, f"models.{name}.{key}", "names a model more than once")
            for i, fallback in enumerate(targets):
                if fallback == name:
                    raise ConfigError(file, f"models.{name}.{key}[{i}]", "a model cannot be its own fallback")
                if fallback not in models:
                    known = ", ".join(sorted(models))
                    raise ConfigError(
                        file, f"models.{name}.{key}[{i}]", f"unknown model {fallback!r} (catalog has: {known})"
                    )
