"""CPU per priced call: LiteLLM's cost calculator vs a catalog price vs the old flat formula.

Issue 18 prices every attempt from its usage details, through `litellm.cost_per_token` when the
catalog sets no price. This prints what that costs per call, side by side in one run (the machine
is noisy: compare the columns of one run, not runs):

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
    from pipeline.transport.provider import TokenUsage

    mapped = ModelSpec(name="g", litellm_model="openai/gpt-4o-mini")
    priced = ModelSpec(name="p", litellm_model="openai/gpt-4o-mini",
                       price=Price(input_per_mtok=0.15, output_per_mtok=0.6, cache_read_per_mtok=0.075))
    usage = TokenUsage(1200, 300, cache_read_tokens=200)
    inp, out = per_token_prices(mapped)
    cases = {
        "litellm cost_per_token (no catalog price)": lambda: usage_cost(mapped, usage),
        "catalog price, per token class": lambda: usage_cost(priced, usage),
        "old flat formula (prompt*in + completion*out)":
            lambda: usage.prompt_tokens * inp + usage.completion_tokens * out,
    }
    for fn in cases.values():
        fn()  # warm: imports, LiteLLM's map
    print(f"{'pricing path':48} {'us/call':>9}")
    for name, fn in cases.items():
        seconds = min(timeit.repeat(fn, number=args.calls, repeat=3)) / args.calls
        print(f"{name:48} {seconds * 1e6:9.2f}")


if __name__ == "__main__":
    main()
