"""The top-spender reports: the tenants and the single requests that cost most, `limit` rows each.

Each is a module-level SQL constant and one function returning a `Table`. The query conventions
are in `reports.py`, which registers these reports under their command-line names.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.analytics.report_common import Table, check_days, now_param, run_query
from pipeline.transport.clickhouse import ClickHouseUsageStore

# -- (6) top spenders ----------------------------------------------------------------------

TOP_TENANTS = """
SELECT tenant,
       uniqExact(request_id)                                             AS requests,
       count()                                                           AS calls,
       sum(cost_usd)                                                     AS spend_usd,
       round(toFloat64(spend_usd) / toFloat64(sum(spend_usd) OVER ()) * 100, 2) AS share_pct,
       spend_usd / requests                                              AS avg_request_usd
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY tenant
ORDER BY spend_usd DESC, tenant
LIMIT {limit:UInt32}
"""


def top_tenants(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, limit: int = 10,
    only: RowFilter = ANY_ROWS,
) -> Table:
    """The `limit` tenants that spent most; share_pct is of all tenants' spend in the window."""
    check_days(days)
    rows = run_query(store, TOP_TENANTS, days=days, now=now_param(now), limit=limit, **only.parameters())
    return Table(
        f"Top {limit} tenants by spend (last {days} days{only.describe()})",
        ("tenant", "requests", "calls", "cost_usd", "share_pct", "avg_request_usd"),
        rows,
    )


TOP_REQUESTS = """
SELECT request_id, tenant,
       any(task_type)                                                     AS task_type_,
       count()                                                            AS attempts,
       arrayStringConcat(arrayMap(x -> x.2, arraySort(groupArray((attempt, model)))), ' > ') AS models,
       argMax(status, attempt)                                            AS last_status,
       min(ts)                                                            AS first_ts,
       sum(cost_usd)                                                      AS spend_usd
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
  AND (tenant, request_id) IN (
      -- the top requests first (cheap aggregates only), then their details
      SELECT tenant, request_id FROM {db}.llm_usage FINAL
      WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
        AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
        AND ({task_type:String} = '' OR task_type = {task_type:String})
      GROUP BY tenant, request_id
      ORDER BY sum(cost_usd) DESC, min(ts), request_id
      LIMIT {limit:UInt32})
GROUP BY tenant, request_id
ORDER BY spend_usd DESC, first_ts, request_id
"""


def top_requests(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, limit: int = 10,
    only: RowFilter = ANY_ROWS,
) -> Table:
    """The `limit` most expensive requests (all their attempts), with the models tried in order."""
    check_days(days)
    rows = run_query(store, TOP_REQUESTS, days=days, now=now_param(now), limit=limit, **only.parameters())
    return Table(
        f"Top {limit} requests by cost (last {days} days{only.describe()})",
        ("request_id", "tenant", "task_type", "attempts", "models", "last_status", "first_ts", "cost_usd"),
        rows,
    )
