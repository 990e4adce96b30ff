"""Load balancing across a model's deployments: the order in which to try them (no I/O)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pipeline.catalog.resilience import Balancing, Deployment


def order_deployments(
    deployments: Sequence[Deployment],
    strategy: Balancing,
    *,
    in_flight: Mapping[str, int],
    latency_ms: Mapping[str, float],
    rng: random.Random,
) -> list[Deployment]:
    """Preferred first; the rest follow as alternatives when the first is at its rate limit.

    weighted: a weighted random draw without replacement (traffic splits by `weight`);
    least_busy: fewest requests in flight from this worker; latency: lowest observed latency
    (an untried deployment counts as fastest, so each gets measured).
    """
    if len(deployments) <= 1:
        return list(deployments)
    if strategy is Balancing.LEAST_BUSY:
        return sorted(deployments, key=lambda d: (in_flight.get(d.name, 0), rng.random()))
    if strategy is Balancing.LATENCY:
        return sorted(deployments, key=lambda d: (latency_ms.get(d.name, 0.0), rng.random()))
    pool, out = list(deployments), []
    while pool:
        pick = rng.choices(range(len(pool)), weights=[d.weight for d in pool])[0]
        out.append(pool.pop(pick))
    return out
