"""Restore today's and this month's spend from ClickHouse, so a restart does not reset budgets."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime

from pipeline.state.budget import BudgetLedger, to_micros
from pipeline.transport.clickhouse import UsageStore

log = logging.getLogger(__name__)


async def restore_spend(store: UsageStore, ledger: BudgetLedger, now: datetime | None = None) -> int:
    """Raise every budget key to the recorded spend (never lowers: live reservations stay)."""
    now = now or datetime.now(UTC)
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    totals: dict[str, float] = defaultdict(float)
    for spend in await store.spend_this_month(now):
        for scope in ("global", f"tenant={spend.tenant}", f"task_type={spend.task_type}"):
            totals[f"{scope}:daily:{day}"] += spend.today_usd
            totals[f"{scope}:monthly:{month}"] += spend.month_usd
    for key, usd in totals.items():
        await ledger.restore(key, to_micros(usd))
    if totals:
        log.info("restored spend of %d budget windows from ClickHouse", len(totals))
    return len(totals)
