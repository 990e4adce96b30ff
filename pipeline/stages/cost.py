"""Cost of a provider call, priced from the usage details the provider returned.

Every call is priced by token class (`TokenUsage`): plain input, cache reads (OpenAI
`cached_tokens`, Anthropic `cache_read_input_tokens`), cache writes (Anthropic
`cache_creation_input_tokens`), audio and image input, plain output, reasoning and audio output.
The classes never overlap: `prompt_tokens` includes the cache tokens for every provider (LiteLLM
adds Anthropic's back to its `input_tokens`), so a cached token is billed once, at the cache rate,
and `completion_tokens` covers every choice of an `n` > 1 request (OpenAI bills them all).

Which calculator, decided per model:

* The catalog's `price` (a per-model override) is priced here, one rate per class; a rate the
  entry leaves unset falls back to the plain input rate (cache, audio and image input) or the
  plain output rate (reasoning, audio output), which is what a provider without such a rate bills.
* Otherwise LiteLLM's cost calculator (`litellm.cost_per_token` with the usage details, through
  `transport/model_info.py`) prices the deployment's model string. Read and checked against the
  providers' published prices by hand (`tests/unit/test_cost_accuracy.py`): it bills cached input
  at `cache_read_input_token_cost` without charging it again as input, cache writes at
  `cache_creation_input_token_cost`, reasoning tokens at the output rate (or
  `output_cost_per_reasoning_token`), audio and image tokens at their own rates, and it knows
  what a flat rate pair cannot (long-context tiers). A model LiteLLM cannot price costs 0 here:
  the catalog loader refuses such a model unless it sets a price.
* When that map entry is one rate per token class (no tiers, no per-second or per-character
  rates: most models), its rates are taken as a `Price` and priced here instead: the same result
  (the accuracy tests check both paths) for ~1 us instead of ~100 us a call, which was 2-3% of a
  worker's CPU per request (`bench/pricing.py`; the profile in docs/benchmarks.md).

Route estimates (`per_token_prices`) stay plain input and output rates: before the call nothing
is known about caching.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from pipeline.transport.model_info import litellm_cost, litellm_rates, query_price, token_prices
from pipeline.transport.provider import TokenUsage

if TYPE_CHECKING:
    from pipeline.catalog.models import ModelSpec, Price


def per_token_prices(spec: ModelSpec, litellm_model: str | None = None) -> tuple[float, float]:
    """USD per input and output token: the catalog override, else LiteLLM's price of the
    deployment's model string (deployments of one model may be priced differently)."""
    if spec.price is not None:
        return spec.price.input_per_mtok / 1e6, spec.price.output_per_mtok / 1e6
    prices = token_prices(litellm_model or spec.litellm_model)
    if prices is None:  # the catalog loader refuses such models; keep the call path total anyway
        return 0.0, 0.0
    return prices


def price_cost(price: Price, usage: TokenUsage) -> float:
    """USD of `usage` at a catalog price, each token class at its own rate (unset: the plain rate)."""
    inp, out = price.input_per_mtok, price.output_per_mtok

    def rate(value: float | None, plain: float) -> float:
        return plain if value is None else value

    per_mtok = (
        usage.text_input_tokens * inp
        + usage.cache_read_tokens * rate(price.cache_read_per_mtok, inp)
        + usage.cache_write_tokens * rate(price.cache_write_per_mtok, inp)
        + usage.audio_input_tokens * rate(price.audio_input_per_mtok, inp)
        + usage.image_input_tokens * rate(price.image_input_per_mtok, inp)
        + usage.text_output_tokens * out
        + usage.reasoning_tokens * rate(price.reasoning_per_mtok, out)
        + usage.audio_output_tokens * rate(price.audio_output_per_mtok, out)
    )
    return per_mtok / 1e6


def usage_cost(spec: ModelSpec, usage: TokenUsage, litellm_model: str | None = None) -> float:
    """USD cost of one call from its usage details: the catalog price of the model when it sets
    one, else LiteLLM's calculator for the deployment's model string."""
    if usage.search_units:
        return search_cost(spec, usage.search_units, litellm_model)
    if spec.price is not None:
        return price_cost(spec.price, usage)
    model = litellm_model or spec.litellm_model
    mapped = _map_price(model)
    if mapped is not None:  # one rate per class in LiteLLM's map: the same arithmetic, ~100x cheaper
        return price_cost(mapped, usage)
    return litellm_cost(model, usage) or 0.0


@lru_cache(maxsize=512)
def _map_price(litellm_model: str) -> Price | None:
    """LiteLLM's rates for a flat-priced model as a catalog Price (None: tiers or other units,
    priced by LiteLLM's calculator)."""
    from pipeline.catalog.models import LITELLM_RATE_FIELDS, Price

    rates = litellm_rates(litellm_model, tuple(LITELLM_RATE_FIELDS), flat_only=True)
    return None if rates is None else Price.from_litellm(rates)


def call_cost(spec: ModelSpec, prompt_tokens: int, completion_tokens: int, litellm_model: str | None = None) -> float:
    """USD cost of a call known only by its token counts (all plain text)."""
    return usage_cost(spec, TokenUsage(prompt_tokens, completion_tokens), litellm_model)


def search_cost(spec: ModelSpec, search_units: int, litellm_model: str | None = None) -> float:
    """USD of a rerank call: its search units (queries billed) at the catalog's `per_query` price,
    else LiteLLM's `input_cost_per_query` for the deployment's model string (rerank tokens are free)."""
    if spec.price is not None and spec.price.per_query is not None:
        return search_units * spec.price.per_query
    per_query = query_price(litellm_model or spec.litellm_model)
    return search_units * per_query if per_query is not None else 0.0
