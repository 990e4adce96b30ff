"""What LiteLLM knows about a model without calling it: prices and token counts (bundled, no network).

The stages price calls and estimate prompts through these functions; LiteLLM itself is imported
only here (and in `llm.py`), so no stage depends on it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=512)
def token_prices(litellm_model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's bundled map, or None when unmapped."""
    import litellm

    try:
        info = litellm.get_model_info(litellm_model)
    except Exception:  # LiteLLM raises several types for "not mapped"
        return None
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    return float(inp), float(out)


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
