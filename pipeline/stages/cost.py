"""Cost of a provider call: the catalog's price override, else LiteLLM's price map."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.transport.model_info import token_prices

if TYPE_CHECKING:
    from pipeline.catalog.models import ModelSpec


def per_token_prices(spec: ModelSpec, litellm_model: str | None = None) -> tuple[float, float]:
    """USD per input and output token: the catalog override, else LiteLLM's price of the
    deployment's model string (deployments of one model may be priced differently)."""
    if spec.price is not None:
        return spec.price.input_per_mtok / 1e6, spec.price.output_per_mtok / 1e6
    prices = token_prices(litellm_model or spec.litellm_model)
    if prices is None:  # the catalog loader refuses such models; keep the call path total anyway
        return 0.0, 0.0
    return prices


def call_cost(spec: ModelSpec, prompt_tokens: int, completion_tokens: int, litellm_model: str | None = None) -> float:
    """USD cost of one call from its real token usage."""
    inp, out = per_token_prices(spec, litellm_model)
    return prompt_tokens * inp + completion_tokens * out
