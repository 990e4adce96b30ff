"""What LiteLLM knows about a model without calling it: prices and token counts (bundled, no network).

The stages price calls and estimate prompts through these functions; LiteLLM itself is imported
only here (and in `llm.py`), so no stage depends on it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipeline.transport.provider import TokenUsage


@lru_cache(maxsize=512)
def _map_entry(litellm_model: str) -> dict[str, Any] | None:
    """The model's entry in LiteLLM's bundled map (read once per model string), None when unmapped:
    what every function below reads."""
    import litellm

    try:
        return dict(litellm.get_model_info(litellm_model))
    except Exception:  # LiteLLM raises several types for "not mapped"
        return None


@lru_cache(maxsize=512)
def token_prices(litellm_model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's bundled map, or None when unmapped."""
    info = _map_entry(litellm_model)
    if info is None:
        return None
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    return float(inp), float(out)


@lru_cache(maxsize=512)
def query_price(litellm_model: str) -> float | None:
    """USD per query (rerank search unit) from LiteLLM's bundled map (`input_cost_per_query`), or None."""
    value = (_map_entry(litellm_model) or {}).get("input_cost_per_query")
    return float(value) if isinstance(value, int | float) else None


def litellm_cost(litellm_model: str, usage: TokenUsage) -> float | None:
    """USD of one call by LiteLLM's cost calculator and price map, from the usage by token class
    (cache reads and writes, reasoning, audio and image tokens at the map's own rates, long-context
    tiers applied); None when LiteLLM cannot price the model."""
    import litellm
    from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper, Usage

    details = Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=usage.cache_read_tokens, cache_creation_tokens=usage.cache_write_tokens,
            audio_tokens=usage.audio_input_tokens, image_tokens=usage.image_input_tokens,
            text_tokens=usage.text_input_tokens),
        completion_tokens_details=CompletionTokensDetailsWrapper(
            reasoning_tokens=usage.reasoning_tokens, audio_tokens=usage.audio_output_tokens,
            text_tokens=usage.text_output_tokens),
    )
    try:
        prompt_usd, completion_usd = litellm.cost_per_token(model=litellm_model, usage_object=details)
    except Exception:  # LiteLLM raises several types for "not mapped"
        return None
    return float(prompt_usd) + float(completion_usd)


#: LiteLLM model-map flags and the catalog capabilities they stand for.
_CAPABILITY_FLAGS = {"supports_function_calling": "tools", "supports_response_schema": "json_mode",
                     "supports_vision": "vision"}


@lru_cache(maxsize=512)
def max_input_tokens(litellm_model: str) -> int | None:
    """The model's context window in LiteLLM's bundled map (max input tokens), None when unmapped."""
    info = _map_entry(litellm_model)
    if info is None:
        return None
    found = info.get("max_input_tokens") or info.get("max_tokens")
    return int(found) if isinstance(found, int | float) and found > 0 else None


@lru_cache(maxsize=512)
def model_capabilities(litellm_model: str) -> frozenset[str] | None:
    """Catalog capabilities LiteLLM's bundled map states for a model (None: unmapped), for a
    LiteLLM config whose entries do not say (the proxy sends tools to any model)."""
    info = _map_entry(litellm_model)
    if info is None:
        return None
    found = {cap for flag, cap in _CAPABILITY_FLAGS.items() if info.get(flag)}
    if info.get("mode") == "embedding":
        found.add("embeddings")
    return frozenset(found)


#: Rates for what the usage never says (batch API, service tiers, 1-hour cache writes, web search):
#: standard rates apply, as LiteLLM's calculator applies them for such usage.
_UNUSED_RATE_SUFFIXES = ("_batches", "_priority", "_flex", "_above_1hr")
_UNUSED_RATES = frozenset({"search_context_cost_per_query", "input_cost_per_query"})


@lru_cache(maxsize=512)
def litellm_rates(litellm_model: str, keys: tuple[str, ...], *, flat_only: bool = False) -> dict[str, float] | None:
    """Those of LiteLLM's per-token rates (`input_cost_per_token`, `cache_read_input_token_cost`,
    ...) its bundled map sets for a model; None when the map has no input price. `flat_only`: None
    too when the map prices anything beyond `keys` (long-context tiers, per-second or per-character
    rates...), which only LiteLLM's calculator (`litellm_cost`) gets right."""
    info = _map_entry(litellm_model)
    if info is None:
        return None
    rates: dict[str, float] = {}
    for key, value in info.items():
        if "cost" not in key or value in (None, 0) or key in _UNUSED_RATES or key.endswith(_UNUSED_RATE_SUFFIXES):
            continue
        if key in keys and isinstance(value, int | float):
            rates[key] = float(value)
        elif flat_only:
            return None
    return rates if "input_cost_per_token" in rates else None


def count_text_tokens(litellm_model: str, texts: list[str]) -> int:
    """Tokens of plain texts (embedding inputs, a stream's delivered text); by characters if the
    tokenizer cannot serve."""
    import litellm

    try:
        return sum(int(litellm.token_counter(model=litellm_model, text=t)) for t in texts)
    except Exception:
        return sum(len(t) for t in texts) // 4 + len(texts)


def count_message_tokens(litellm_model: str, messages: list[dict[str, Any]]) -> int:
    """Tokens of a chat prompt; an exotic message shape is estimated by characters, never an error."""
    import litellm

    try:
        return int(litellm.token_counter(model=litellm_model, messages=messages))
    except Exception:
        return sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)
