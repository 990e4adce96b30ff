"""The model catalog (`config/models.yaml`): what each named model is and how to reach it."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.yaml_loader import load_yaml_mapping

#: LiteLLM provider prefixes that name the same upstream API family.
_PROVIDER_ALIASES = {"ollama_chat": "ollama", "hosted_vllm": "vllm"}


class Price(BaseModel):
    """USD per million tokens; overrides LiteLLM's price map for this model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelSpec(BaseModel):
    """One catalog entry. `name` is what requests and routes refer to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    litellm_model: str = Field(description="LiteLLM model string, e.g. openai/gpt-4o-mini.")
    api_base: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key)."
    )
    provider: str = ""
    context_window: int | None = Field(default=None, gt=0)
    price: Price | None = None
    capabilities: frozenset[str] = frozenset()
    quality: int = Field(default=3, ge=1, le=5, description="Relative answer quality, for cost_preference.")
    disabled: bool = False

    @model_validator(mode="after")
    def _derive_provider(self) -> ModelSpec:
        if "/" not in self.litellm_model:
            raise ValueError(f"litellm_model {self.litellm_model!r} must carry a provider prefix, e.g. openai/...")
        if not self.provider:
            prefix = self.litellm_model.split("/", 1)[0]
            object.__setattr__(self, "provider", _PROVIDER_ALIASES.get(prefix, prefix))
        return self

    def api_key(self) -> str | None:
        """The key from the environment at call time, so rotating a secret needs no reload."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, dict] = Field(min_length=1)


def load_models(file: Path) -> dict[str, ModelSpec]:
    """Parse and validate `models.yaml`; every model must have a known price."""
    from pipeline.stages.cost import has_known_price  # local: litellm import is slow

    raw = load_yaml_mapping(file)
    try:
        entries = _CatalogFile.model_validate(raw).models
    except ValidationError as exc:
        raise ConfigError.from_validation(file, exc) from None
    models: dict[str, ModelSpec] = {}
    for name, body in entries.items():
        if not isinstance(body, dict):
            raise ConfigError(file, f"models.{name}", "expected a mapping of model settings")
        try:
            spec = ModelSpec.model_validate({**body, "name": name})
        except ValidationError as exc:
            raise ConfigError.from_validation(file, exc, prefix=f"models.{name}") from None
        if spec.price is None and not has_known_price(spec.litellm_model):
            raise ConfigError(
                file,
                f"models.{name}",
                f"LiteLLM has no price for {spec.litellm_model!r}; set price: {{input_per_mtok, output_per_mtok}}"
                " (0 for free local models) so its cost can be accounted",
            )
        models[name] = spec
    return models
