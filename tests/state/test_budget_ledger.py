"""The spend ledger, one test body for both backends (in-process and a real Redis)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.state.budget import BudgetLedger, BudgetLine, LedgerSettlement, Refused, Reserved
from tests.state.conftest import StateBackend


@pytest.fixture
def ledgers(backend: StateBackend) -> tuple[BudgetLedger, BudgetLedger]:
    """Two handles on one ledger: for Redis two clients (as two workers would hold)."""
    return backend.state.budgets, backend.other().budgets


def line(key: str, limit: int, alert_at: int | None = None) -> BudgetLine:
    return BudgetLine(key, key.replace(":", " "), limit, alert_at if alert_at is not None else limit)


async def test_reserve_is_all_or_nothing_across_lines(ledgers) -> None:
    ledger, _ = ledgers
    big, small = line("global:daily:d", 1000), line("tenant=a:daily:d", 100)
    assert await ledger.reserve([big, small], 60) == Reserved()
    assert await ledger.reserve([big, small], 60) == Refused(1, 60)  # the tenant line refuses, names itself
    assert await ledger.values([big.key, small.key]) == [60, 60]  # nothing added on refusal


async def test_concurrent_reservations_never_exceed_the_limit(ledgers) -> None:
    a, b = ledgers
    budget = line("tenant=b:daily:d", 1000)
    results = await asyncio.gather(*((a if i % 2 else b).reserve([budget], 30) for i in range(200)))
    assert sum(1 for r in results if isinstance(r, Reserved)) == 1000 // 30
    assert all(r == Refused(0, (1000 // 30) * 30) for r in results if not isinstance(r, Reserved))
    assert await a.values([budget.key]) == [(1000 // 30) * 30]


async def test_settle_adjusts_and_alerts_once(ledgers) -> None:
    ledger, other = ledgers
    budget = line("tenant=c:daily:d", 1000, alert_at=500)
    assert await ledger.reserve([budget], 400) == Reserved()
    assert (await ledger.settle([budget], -400)).crossed == []  # released
    assert await ledger.values([budget.key]) == [0]
    assert await ledger.reserve([budget], 100) == Reserved()
    settled = await ledger.settle([budget], 500)
    assert settled.crossed == [budget] and settled.values == [600]  # actual 600 >= 500: alert
    assert await ledger.reserve([budget], 10) == Reserved()
    assert await other.settle([budget], 0) == LedgerSettlement([], [610])  # alerts once per window, across handles
    assert await ledger.values([budget.key]) == [610]


async def test_restore_only_raises(ledgers) -> None:
    ledger, _ = ledgers
    await ledger.restore("k", 500)
    await ledger.restore("k", 200)
    assert await ledger.values(["k"]) == [500]
