"""Budget stage: which budgets a request draws on, reservation before a call, settlement after.

The windows are UTC days and months. A request draws on the global budgets, its tenant's
(or the default tenant's) and, where configured, its task type's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.catalog.budgets import CostControls, Limits
from pipeline.state.budget import BudgetLedger, BudgetLine, Refused, to_micros


@dataclass(frozen=True, slots=True)
class Reservation:
    lines: tuple[BudgetLine, ...]
    amount: int


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Names the budget that cannot cover the estimate."""

    line: BudgetLine
    spent: int
    amount: int

    def describe(self) -> str:
        return (f"{self.line.name} budget: limit {self.line.limit / 1e6:.6f} USD, spent or reserved "
                f"{self.spent / 1e6:.6f} USD, this call needs up to {self.amount / 1e6:.6f} USD")


@dataclass(frozen=True, slots=True)
class CrossedThreshold:
    """A budget line that crossed its alert threshold (the worker publishes it as the wire
    event `contracts.models.BudgetAlert`; this is the stage's in-process fact, not the event)."""

    line: BudgetLine
    threshold: float


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What settling a request means to the worker: the alerts to publish and each line's spend
    (for the remaining-budget gauge). Built from the ledger's raw `LedgerSettlement`."""

    alerts: list[CrossedThreshold]
    spent: list[tuple[BudgetLine, int]]  # each line with its value (micro-USD) after settling


def budget_lines(controls: CostControls, tenant: str, task_type: str, now: datetime) -> tuple[BudgetLine, ...]:
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    scopes: list[tuple[str, str, Limits]] = [
        ("global", "global", controls.global_),
        (f"tenant={tenant}", f"tenant {tenant}", controls.tenant_limits(tenant)),
    ]
    if task_type in controls.task_types:
        scopes.append((f"task_type={task_type}", f"task type {task_type}", controls.task_types[task_type]))
    lines = []
    for scope, label, limits in scopes:
        for period, window, limit in (("daily", day, limits.daily_usd), ("monthly", month, limits.monthly_usd)):
            if limit is not None:
                micros = to_micros(limit)
                lines.append(BudgetLine(f"{scope}:{period}:{window}", f"{label} {period}", micros,
                                        int(micros * controls.alert_threshold)))
    return tuple(lines)


class BudgetGuard:
    """Reserve the estimate, settle to the actual cost; a refusal names the exhausted budget."""

    def __init__(self, ledger: BudgetLedger, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.ledger = ledger
        self._clock = clock

    async def reserve(
        self, controls: CostControls, tenant: str, task_type: str, estimate_usd: float
    ) -> Reservation | BudgetRefusal:
        lines = budget_lines(controls, tenant, task_type, self._clock())
        amount = to_micros(estimate_usd)
        result = await self.ledger.reserve(lines, amount)
        if isinstance(result, Refused):
            return BudgetRefusal(lines[result.index], result.value, amount)
        return Reservation(lines, amount)

    async def settle(self, reservation: Reservation, actual_usd: float, threshold: float) -> SettleOutcome:
        """Actual cost replaces the estimate (0 for a failed call: the reservation is released)."""
        if not reservation.lines:
            return SettleOutcome([], [])
        done = await self.ledger.settle(reservation.lines, to_micros(actual_usd) - reservation.amount)
        return SettleOutcome([CrossedThreshold(line, threshold) for line in done.crossed],
                             list(zip(reservation.lines, done.values, strict=True)))
