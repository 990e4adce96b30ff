"""CPU per priced call: each pricing path of `stages/cost.py` and the old flat formula, in one run.

Issue 18 prices every attempt from its usage details. With no catalog price, a model whose
LiteLLM map entry is one rate per token class is priced with those rates by our arithmetic, and
only a model with tiers goes through `litellm.cost_per_token` (about 100 us a call, ~2-3% of a
worker's CPU per request when every call took it). This prints each path side by side in one run
(the machine is noisy: compare the rows of one run, not runs):

    .venv/bin/python bench/pricing.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import os
import timeit

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()

    from pipeline.catalog.models import ModelSpec, Price
    from pipeline.stages.cost import per_token_prices, usage_cost
    from pipeline.transport.model_info import litellm_cost
    from pipeline.transport.provider import TokenUsage

    mapped = ModelSpec(name="g", litellm_model="openai/gpt-4o-mini")
    priced = ModelSpec(name="p", litellm_model="openai/gpt-4o-mini",
                       price=Price(input_per_mtok=0.15, output_per_mtok=0.6, cache_read_per_mtok=0.075))
    usage = TokenUsage(1200, 300, cache_read_tokens=200)
    inp, out = per_token_prices(mapped)
    cases = {
        "no catalog price: LiteLLM's rates, our arithmetic": lambda: usage_cost(mapped, usage),
        "LiteLLM's calculator (models with tiers)": lambda: litellm_cost(mapped.litellm_model, usage),
        "catalog price, per token class": lambda: usage_cost(priced, usage),
        "old flat formula (prompt*in + completion*out)":
            lambda: usage.prompt_tokens * inp + usage.completion_tokens * out,
    }
    for fn in cases.values():
        fn()  # warm: imports, LiteLLM's map
    print(f"{'pricing path':52} {'us/call':>9}")
    for name, fn in cases.items():
        seconds = min(timeit.repeat(fn, number=args.calls, repeat=3)) / args.calls
        print(f"{name:52} {seconds * 1e6:9.2f}")


if __name__ == "__main__":
    main()
