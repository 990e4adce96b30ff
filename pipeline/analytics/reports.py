"""Analyst queries over the usage table; the same SQL runs on chDB and a ClickHouse server.

The registry of reports by command-line name (`REPORTS`, `ReportOptions`), and the one import
path for every report: the queries live by subject in `cost_reports.py` (spend, budgets,
waste), `reliability_reports.py` (latency, errors, fallbacks) and `top_reports.py` (top
spenders), on the helpers of `report_common.py`, and are re-exported here with their SQL.

One function per analyst question, each returning a `Table`. Every query is a module constant
with a `{db}` placeholder (the database) and ClickHouse query parameters (`{now:...}`,
`{days:UInt32}`, `{limit:UInt32}`, and the row filters `{model:String}`, `{tenant:String}`,
`{task_type:String}`, '' = any: see `filters.py`), so `docs/analytics.md` can quote it verbatim
and clickhouse-client can run it with `--param_now=... --param_days=...`.

Exact figures read `llm_usage FINAL`: the table is a ReplacingMergeTree on `event_id`, and a
re-delivered usage event sits next to its twin until a background merge, so a read without
FINAL may count it twice. The rollups fed by materialized views (`llm_cost_daily`,
`llm_latency_hourly`, `llm_spend_monthly`) are summed at insert time and never see that
deduplication: they are exact only while no event was stored twice. The latency report reads
its rollup anyway (quantiles are estimates in any case; see `latency_by_model`).

Windows: `days` means the last `days` calendar days in UTC, today included
(`toDate(ts) >= toDate(now) - (days - 1)`), except the original `cost_by_model_task_tenant`,
which keeps its rolling `days * 24h`. Windows have no upper bound, so rows stamped a little
ahead of the reader's clock are never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pipeline.analytics.cost_reports import (
    BUDGET_BURN,
    COST_BY_DAY,
    COST_BY_MODEL_TASK_TENANT,
    WASTED_COST,
    budget_burn,
    cost_by_day,
    cost_by_model_task_tenant,
    wasted_cost,
)
from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.analytics.reliability_reports import (
    ERRORS_BY_PROVIDER_CODE,
    LATENCY_BY_MODEL,
    LATENCY_BY_MODEL_EXACT,
    RELIABILITY_BY_PROVIDER,
    errors_by_provider_code,
    latency_by_model,
    reliability_by_provider,
)
from pipeline.analytics.report_common import Table
from pipeline.analytics.top_reports import TOP_REQUESTS, TOP_TENANTS, top_requests, top_tenants
from pipeline.catalog.budgets import CostControls
from pipeline.transport.clickhouse import ClickHouseUsageStore

__all__ = [
    "BUDGET_BURN", "COST_BY_DAY", "COST_BY_MODEL_TASK_TENANT", "DEFAULT_REPORT", "ERRORS_BY_PROVIDER_CODE",
    "LATENCY_BY_MODEL", "LATENCY_BY_MODEL_EXACT", "RELIABILITY_BY_PROVIDER", "REPORTS", "TOP_REQUESTS",
    "TOP_TENANTS", "WASTED_COST", "Report", "ReportOptions", "Table", "budget_burn", "cost_by_day",
    "cost_by_model_task_tenant", "errors_by_provider_code", "latency_by_model", "reliability_by_provider",
    "top_requests", "top_tenants", "wasted_cost",
]


# -- registry --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReportOptions:
    """What any report may need; each report reads the fields it uses."""

    days: int = 30
    now: datetime | None = None
    limit: int = 10
    cost_controls: CostControls | None = None
    only: RowFilter = ANY_ROWS  # every report but `budgets` (whole spend against whole limits)


Report = Callable[[ClickHouseUsageStore, ReportOptions], Table]

#: Report name (as typed on the command line) -> report. `cost` is the default.
REPORTS: dict[str, Report] = {
    "cost": lambda s, o: cost_by_model_task_tenant(s, days=o.days, now=o.now, only=o.only),
    "daily": lambda s, o: cost_by_day(s, days=o.days, now=o.now, only=o.only),
    "budgets": lambda s, o: budget_burn(s, o.cost_controls, now=o.now),
    "latency": lambda s, o: latency_by_model(s, days=o.days, now=o.now, only=o.only),
    "reliability": lambda s, o: reliability_by_provider(s, days=o.days, now=o.now, only=o.only),
    "errors": lambda s, o: errors_by_provider_code(s, days=o.days, now=o.now, only=o.only),
    "waste": lambda s, o: wasted_cost(s, days=o.days, now=o.now, only=o.only),
    "top-tenants": lambda s, o: top_tenants(s, days=o.days, now=o.now, limit=o.limit, only=o.only),
    "top-requests": lambda s, o: top_requests(s, days=o.days, now=o.now, limit=o.limit, only=o.only),
}
DEFAULT_REPORT = "cost"
