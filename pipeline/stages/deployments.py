"""Which deployment of a model to call now: skips those cooling down or at their RPM/TPM limit.

Local balancing inputs (requests in flight from this worker, observed latency) live here;
cooldowns, rate-limit windows and recent outcomes live in the shared `HealthState` (in-process,
or Redis so every worker sees the same cooldowns and limits).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from pipeline.catalog import ModelSpec
from pipeline.catalog.resilience import Deployment, Resilience
from pipeline.contracts.models import SkipReason
from pipeline.stages.balance import order_deployments
from pipeline.stages.retry import DEPLOYMENT_FAULTS
from pipeline.state.health import HealthState
from pipeline.transport.provider import ProviderError

_EWMA = 0.2


@dataclass(frozen=True, slots=True)
class Unavailable:
    reason: SkipReason
    detail: str = ""
    wait_s: float = 0.0


class DeploymentPool:
    def __init__(self, health: HealthState, rng: random.Random | None = None) -> None:
        self.health = health
        self._rng = rng or random.Random()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.latency_ms: dict[str, float] = {}

    async def pick(self, spec: ModelSpec, tokens: int) -> Deployment | Unavailable:
        """A deployment to call now (its RPM/TPM slot already taken), or why there is none."""
        cooling = await self.health.cooling_down([d.name for d in spec.deployments])
        ready = [d for d in spec.deployments if d.name not in cooling]
        if not ready:
            wait = min(cooling.values())
            return Unavailable(SkipReason.COOLING_DOWN, f"for {wait:.1f}s more", wait)
        limited, waits = [], []
        for deployment in order_deployments(ready, spec.resilience.load_balancing, in_flight=self.in_flight,
                                            latency_ms=self.latency_ms, rng=self._rng):
            if deployment.rpm is None and deployment.tpm is None:
                return deployment
            decision = await self.health.try_acquire(deployment.name, rpm=deployment.rpm, tpm=deployment.tpm,
                                                     tokens=tokens)
            if decision.allowed:
                return deployment
            limited.append(f"{deployment.name}:{decision.limit}")
            waits.append(decision.retry_after_s)
        return Unavailable(SkipReason.RATE_LIMIT_REACHED, ",".join(limited), min(waits, default=1.0))

    def started(self, deployment: Deployment) -> None:
        self.in_flight[deployment.name] += 1

    async def finished(
        self, deployment: Deployment, policy: Resilience, latency_ms: float, *, error: ProviderError | None,
        estimated_tokens: int, actual_tokens: int,
    ) -> bool:
        """Record the outcome; True when this failure put the deployment into cooldown."""
        self.in_flight[deployment.name] -= 1
        previous = self.latency_ms.get(deployment.name)
        self.latency_ms[deployment.name] = latency_ms if previous is None else (
            (1 - _EWMA) * previous + _EWMA * latency_ms)
        await self.health.record_outcome(deployment.name, error is None, latency_ms)
        if deployment.tpm is not None and actual_tokens != estimated_tokens:
            await self.health.adjust_tokens(deployment.name, actual_tokens - estimated_tokens)
        if error is None:
            await self.health.record_success(deployment.name)
            return False
        if error.code in DEPLOYMENT_FAULTS:
            allowed_fails, cooldown_s = policy.cooldown_rule(error.code.value)
            return await self.health.record_failure(
                deployment.name, allowed_fails=allowed_fails, window_s=policy.fail_window_s, cooldown_s=cooldown_s,
            )
        return False
