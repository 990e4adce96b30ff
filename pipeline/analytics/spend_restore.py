"""Restore today's and this month's spend from ClickHouse, so a restart does not reset budgets."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime

from pipeline.state.budget import BudgetLedger, to_micros
from pipeline.transport.clickhouse import ClickHouseUsageStore

log = logging.getLogger(__name__)

SPEND_THIS_MONTH = """
SELECT tenant, task_type,
       sumIf(cost_usd, toDate(ts) = toDate(%(now)s)) AS today,
       sum(cost_usd) AS month
FROM {db}.llm_usage FINAL
WHERE toStartOfMonth(ts) = toStartOfMonth(toDateTime64(%(now)s, 3, 'UTC'))
GROUP BY tenant, task_type
"""


async def restore_spend(store: ClickHouseUsageStore, ledger: BudgetLedger, now: datetime | None = None) -> int:
    """Raise every budget key to the recorded spend (never lowers: live reservations stay)."""
    now = now or datetime.now(UTC)
    rows = await store.query(SPEND_THIS_MONTH.replace("{db}", store.database), {"now": now.replace(tzinfo=None)})
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    totals: dict[str, float] = defaultdict(float)
    for tenant, task_type, today, this_month in rows:
        for scope in ("global", f"tenant={tenant}", f"task_type={task_type}"):
            totals[f"{scope}:daily:{day}"] += float(today)
            totals[f"{scope}:monthly:{month}"] += float(this_month)
    for key, usd in totals.items():
        await ledger.restore(key, to_micros(usd))
    if totals:
        log.info("restored spend of %d budget windows from ClickHouse", len(totals))
    return len(totals)
