"""The spend reports: cost by model/task/tenant (the default), by day, budget burn, and waste.

Each answers "where did the money go" (against the configured budgets for `budget_burn`), as a
module-level SQL constant and one function returning a `Table`. The query conventions are in
`reports.py`, which registers these reports under their command-line names.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.analytics.report_common import Table, check_days, now_param, run_query
from pipeline.catalog.budgets import CostControls, Limits
from pipeline.transport.clickhouse import ClickHouseUsageStore

# -- (0) the original cost report (the CLI default) ----------------------------------------

COST_BY_MODEL_TASK_TENANT = """
SELECT model, task_type, tenant,
       count()                AS calls,
       countIf(status = 'ok') AS ok,
       countIf(status != 'ok') AS failed,
       sum(prompt_tokens)     AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd)          AS cost_usd
FROM {db}.llm_usage FINAL
WHERE ts >= {now:DateTime64(3, 'UTC')} - INTERVAL {days:UInt32} DAY
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY model, task_type, tenant
ORDER BY cost_usd DESC, calls DESC, model, task_type, tenant
"""


def cost_by_model_task_tenant(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, only: RowFilter = ANY_ROWS,
) -> Table:
    """Cost and call counts by model, task type and tenant over the last `days` days (rolling)."""
    rows = run_query(store, COST_BY_MODEL_TASK_TENANT, days=days, now=now_param(now), **only.parameters())
    return Table(
        f"Cost by model, task type and tenant (last {days} days{only.describe()})",
        ("model", "task_type", "tenant", "calls", "ok", "failed", "prompt_tokens", "completion_tokens", "cost_usd"),
        rows,
    )


# -- (1) cost by day, tenant, task type and model ------------------------------------------

COST_BY_DAY = """
SELECT toDate(ts)              AS day,
       tenant, task_type, model,
       count()                 AS calls,
       countIf(status != 'ok') AS failed,
       sum(prompt_tokens)      AS prompt_tokens,
       sum(completion_tokens)  AS completion_tokens,
       sum(cost_usd)           AS cost_usd
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY day, tenant, task_type, model
ORDER BY day, tenant, task_type, model
"""


def cost_by_day(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, only: RowFilter = ANY_ROWS,
) -> Table:
    """Calls, failures, tokens and cost per UTC day, tenant, task type and model (every attempt)."""
    check_days(days)
    rows = run_query(store, COST_BY_DAY, days=days, now=now_param(now), **only.parameters())
    return Table(
        f"Cost by day, tenant, task type and model (last {days} days{only.describe()})",
        ("day", "tenant", "task_type", "model", "calls", "failed", "prompt_tokens", "completion_tokens", "cost_usd"),
        rows,
    )


# -- (2) month-to-date burn against budgets ------------------------------------------------

BUDGET_BURN = """
WITH {now:DateTime64(3, 'UTC')} AS now_,
     toStartOfMonth(now_) AS month_start,
     dateDiff('millisecond', toDateTime64(month_start, 3, 'UTC'), now_)
       / dateDiff('millisecond', toDateTime64(month_start, 3, 'UTC'),
                  toDateTime64(addMonths(month_start, 1), 3, 'UTC')) AS elapsed
SELECT multiIf(grouping(tenant) = 1 AND grouping(task_type) = 1, 'global',
               grouping(task_type) = 1, 'tenant', 'task_type')          AS scope,
       multiIf(scope = 'tenant', tenant, scope = 'task_type', task_type, '') AS name,
       sum(cost_usd)                                                      AS mtd_usd,
       sumIf(cost_usd, toDate(ts) = toDate(now_))                         AS today_usd,
       any(elapsed)                                                       AS month_elapsed,
       if(month_elapsed > 0, toFloat64(mtd_usd) / month_elapsed, NULL)    AS forecast_usd
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= month_start AND toDate(ts) < addMonths(month_start, 1)
GROUP BY GROUPING SETS ((), (tenant), (task_type))
ORDER BY scope, name
"""


def _pct(part: Decimal | float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(float(part) / whole * 100, 2)


def budget_burn(
    store: ClickHouseUsageStore, controls: CostControls | None = None, *, now: datetime | None = None
) -> Table:
    """Month-to-date spend against every monthly (and daily) budget, with a month-end forecast.

    Scopes, in order: `global` (all spend); `tenant` for each tenant listed under
    `cost_controls.tenants` (spend or not); `default_tenant` for each other tenant with spend
    this month (each is held to the `default_tenant` limits on its own); `task_type` for each
    task type listed under `cost_controls.task_types`. An absent limit is `None` (unlimited).

    Forecast (linear): `forecast_usd = mtd_usd / elapsed`, where `elapsed` is the fraction of the
    calendar month (UTC) gone at `now`: (now - month start) / (month length), in milliseconds.
    `None` at the very first millisecond of a month. Percentages are of the monthly budget,
    `today_pct` of the daily one. Spend counts every attempt's cost, as the budget guard does.
    """
    controls = controls or CostControls()
    found: dict[tuple[str, str], tuple[Decimal, Decimal, float | None]] = {}
    for scope, name, mtd, today, _elapsed, forecast in run_query(store, BUDGET_BURN, now=now_param(now)):
        found[(scope, name)] = (mtd, today, forecast)
    zero = (Decimal(0), Decimal(0), 0.0)

    def line(scope: str, name: str, limits: Limits, key: tuple[str, str]) -> tuple[Any, ...]:
        mtd, today, forecast = found.get(key, zero)
        return (scope, name, limits.monthly_usd, mtd, _pct(mtd, limits.monthly_usd), forecast,
                _pct(forecast, limits.monthly_usd), limits.daily_usd, today, _pct(today, limits.daily_usd))

    rows = [line("global", "", controls.global_, ("global", ""))]
    rows += [line("tenant", t, limits, ("tenant", t)) for t, limits in sorted(controls.tenants.items())]
    others = sorted(name for scope, name in found if scope == "tenant" and name not in controls.tenants)
    rows += [line("default_tenant", t, controls.default_tenant, ("tenant", t)) for t in others]
    rows += [line("task_type", t, limits, ("task_type", t)) for t, limits in sorted(controls.task_types.items())]
    return Table(
        "Month-to-date spend against budgets, with a linear month-end forecast",
        ("scope", "name", "monthly_budget_usd", "mtd_usd", "mtd_pct", "forecast_usd", "forecast_pct",
         "daily_budget_usd", "today_usd", "today_pct"),
        rows,
    )


# -- (5) cost wasted on failed attempts ----------------------------------------------------

WASTED_COST = """
SELECT if(grouping(model) = 1, '(all)', model)                         AS model_,
       if(grouping(provider) = 1, '(all)', provider)                   AS provider_,
       countIf(NOT is_final)                                           AS not_final_attempts,
       sumIf(cost_usd, NOT is_final)                                   AS not_final_usd,
       countIf(is_final AND status != 'ok')                            AS failed_replies,
       sumIf(cost_usd, is_final AND status != 'ok')                    AS failed_reply_usd,
       not_final_usd + failed_reply_usd                                AS wasted_usd,
       sum(cost_usd)                                                   AS total_usd,
       round(if(total_usd = 0, 0, toFloat64(wasted_usd) / toFloat64(total_usd) * 100), 2) AS wasted_pct
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY GROUPING SETS ((model, provider), ())
ORDER BY grouping(model), wasted_usd DESC, model_, provider_
"""


def wasted_cost(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, only: RowFilter = ANY_ROWS,
) -> Table:
    """Cost spent on attempts that produced no useful reply, by model and provider, plus a total row.

    wasted = `not_final_usd` + `failed_reply_usd`, two disjoint parts:
      * `not_final_usd`: cost of attempts with `NOT is_final` — their result did not become the
        reply (a failed attempt that was retried or fell back; an attempt of a round abandoned
        to wait for capacity);
      * `failed_reply_usd`: cost of the final attempt of requests whose reply was an error
        (`is_final AND status = 'error'`). Such a request's earlier attempts are already in the
        first part, so together the parts are the whole cost of every request whose final reply
        was an error, plus the cost of every superseded attempt of requests that succeeded.
    Equivalently: every attempt's cost except that of final successful attempts. Attributed to
    the model/provider that charged it. `wasted_pct` = wasted / all spend of that row.
    """
    check_days(days)
    rows = run_query(store, WASTED_COST, days=days, now=now_param(now), **only.parameters())
    return Table(
        f"Cost wasted on failed attempts (last {days} days{only.describe()})",
        ("model", "provider", "not_final_attempts", "not_final_usd", "failed_replies", "failed_reply_usd",
         "wasted_usd", "total_usd", "wasted_pct"),
        rows,
    )
