"""Analyst queries over the usage table; the same SQL runs on chDB and a ClickHouse server.

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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.catalog.budgets import CostControls, Limits
from pipeline.transport.clickhouse import ClickHouseUsageStore


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


# -- shared helpers ----------------------------------------------------------------------

def _now_param(now: datetime | None) -> str:
    """`now` as the text of a DateTime64(3, 'UTC') parameter (naive datetimes are taken as UTC)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def _check_days(days: int) -> None:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")


def _run(store: ClickHouseUsageStore, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    return store.query_sync(sql.replace("{db}", store.database), parameters)


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
    rows = _run(store, COST_BY_MODEL_TASK_TENANT, days=days, now=_now_param(now), **only.parameters())
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
    _check_days(days)
    rows = _run(store, COST_BY_DAY, days=days, now=_now_param(now), **only.parameters())
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
    for scope, name, mtd, today, _elapsed, forecast in _run(store, BUDGET_BURN, now=_now_param(now)):
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


# -- (3) latency percentiles by model and provider -----------------------------------------

LATENCY_BY_MODEL = """
SELECT model, provider,
       countMerge(calls)                               AS calls,
       quantilesMerge(0.5, 0.95, 0.99)(latency)        AS q,
       round(q[1], 3) AS p50_ms, round(q[2], 3) AS p95_ms, round(q[3], 3) AS p99_ms
FROM {db}.llm_latency_hourly
WHERE toDate(hour) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String})
GROUP BY model, provider
ORDER BY model, provider
"""

LATENCY_BY_MODEL_EXACT = """
SELECT model, provider,
       count()                                                AS calls,
       quantilesExactInclusive(0.5, 0.95, 0.99)(latency_ms)  AS q,
       round(q[1], 3) AS p50_ms, round(q[2], 3) AS p95_ms, round(q[3], 3) AS p99_ms
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY model, provider
ORDER BY model, provider
"""


def latency_by_model(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, exact: bool = False,
    only: RowFilter = ANY_ROWS,
) -> Table:
    """p50/p95/p99 latency (ms) of every attempt, failed ones included, by model and provider.

    Default: merged from the hourly rollup `llm_latency_hourly` (cheap at any volume). Its
    `quantiles` keep a uniform reservoir of 8,192 values per state: exact (linear interpolation
    between the two nearest ranks) while a model/provider has at most 8,192 calls in the window,
    a sampled estimate beyond; and a usage event stored twice counts twice. `exact=True` reads
    `llm_usage FINAL` with `quantilesExactInclusive` (same interpolation, deduplicated, exact at
    any volume, slower). Hours are whole: the window starts at UTC midnight `days - 1` days ago.
    """
    _check_days(days)
    exact = exact or bool(only.tenant or only.task_type)  # the rollup keeps model and provider only
    params = only.parameters() if exact else {"model": only.model}
    rows = _run(store, LATENCY_BY_MODEL_EXACT if exact else LATENCY_BY_MODEL, days=days, now=_now_param(now),
                **params)
    return Table(
        f"Latency percentiles by model and provider (last {days} days{', exact' if exact else ''}{only.describe()})",
        ("model", "provider", "calls", "p50_ms", "p95_ms", "p99_ms"),
        [(m, p, calls, p50, p95, p99) for m, p, calls, _q, p50, p95, p99 in rows],
    )


# -- (4) error and fallback rates by provider, and errors by code --------------------------

RELIABILITY_BY_PROVIDER = """
SELECT provider,
       count()                                                          AS calls,
       countIf(status != 'ok')                                          AS errors,
       round(errors / calls * 100, 2)                                   AS error_rate_pct,
       countIf(attempt = 1)                                             AS requests_started,
       countIf(attempt = 1 AND (tenant, request_id) IN (
           SELECT tenant, request_id FROM {db}.llm_usage FINAL
           WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1) AND is_fallback
       ))                                                               AS requests_fell_back,
       round(if(requests_started = 0, 0, requests_fell_back / requests_started * 100), 2) AS fallback_rate_pct,
       countIf(is_fallback)                                             AS calls_as_fallback
FROM {db}.llm_usage FINAL
WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
  AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
  AND ({task_type:String} = '' OR task_type = {task_type:String})
GROUP BY provider
ORDER BY provider
"""


def reliability_by_provider(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, only: RowFilter = ANY_ROWS,
) -> Table:
    """Error rate and fallback rate per provider.

    `error_rate_pct`: failed attempts / attempts on the provider. `fallback_rate_pct`: of the
    requests whose first attempt (`attempt = 1`, numbered across the whole request) went to the
    provider (`requests_started`), the share that then tried another model (any attempt of the
    request with `is_fallback`) — how often this provider's failure pushed traffic elsewhere.
    `calls_as_fallback`: attempts the provider served as another model's fallback. A request is
    (tenant, request_id); both its first attempt and its fallback must fall in the window.
    """
    _check_days(days)
    rows = _run(store, RELIABILITY_BY_PROVIDER, days=days, now=_now_param(now), **only.parameters())
    return Table(
        f"Error and fallback rates by provider (last {days} days{only.describe()})",
        ("provider", "calls", "errors", "error_rate_pct", "requests_started", "requests_fell_back",
         "fallback_rate_pct", "calls_as_fallback"),
        rows,
    )


ERRORS_BY_PROVIDER_CODE = """
SELECT provider, error_code, errors,
       round(errors / calls * 100, 2)                 AS pct_of_calls,
       round(errors / provider_errors * 100, 2)       AS pct_of_errors,
       cost_usd
FROM
(
    SELECT provider, error_code,
           countIf(status != 'ok')                              AS errors,
           sumIf(cost_usd, status != 'ok')                      AS cost_usd,
           sum(count()) OVER (PARTITION BY provider)            AS calls,
           sum(countIf(status != 'ok')) OVER (PARTITION BY provider) AS provider_errors
    FROM {db}.llm_usage FINAL
    WHERE toDate(ts) >= toDate({now:DateTime64(3, 'UTC')}) - ({days:UInt32} - 1)
      AND ({model:String} = '' OR model = {model:String}) AND ({tenant:String} = '' OR tenant = {tenant:String})
      AND ({task_type:String} = '' OR task_type = {task_type:String})
    GROUP BY provider, error_code
)
WHERE errors > 0
ORDER BY provider, errors DESC, error_code
"""


def errors_by_provider_code(
    store: ClickHouseUsageStore, *, days: int = 30, now: datetime | None = None, only: RowFilter = ANY_ROWS,
) -> Table:
    """Failed attempts by provider and error code: share of the provider's calls and of its errors."""
    _check_days(days)
    rows = _run(store, ERRORS_BY_PROVIDER_CODE, days=days, now=_now_param(now), **only.parameters())
    return Table(
        f"Errors by provider and error code (last {days} days{only.describe()})",
        ("provider", "error_code", "errors", "pct_of_calls", "pct_of_errors", "cost_usd"),
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
    _check_days(days)
    rows = _run(store, WASTED_COST, days=days, now=_now_param(now), **only.parameters())
    return Table(
        f"Cost wasted on failed attempts (last {days} days{only.describe()})",
        ("model", "provider", "not_final_attempts", "not_final_usd", "failed_replies", "failed_reply_usd",
         "wasted_usd", "total_usd", "wasted_pct"),
        rows,
    )


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
    _check_days(days)
    rows = _run(store, TOP_TENANTS, days=days, now=_now_param(now), limit=limit, **only.parameters())
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
    _check_days(days)
    rows = _run(store, TOP_REQUESTS, days=days, now=_now_param(now), limit=limit, **only.parameters())
    return Table(
        f"Top {limit} requests by cost (last {days} days{only.describe()})",
        ("request_id", "tenant", "task_type", "attempts", "models", "last_status", "first_ts", "cost_usd"),
        rows,
    )


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
