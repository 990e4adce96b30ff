"""The reliability reports: latency percentiles by model, error and fallback rates by provider, errors by code.

Each answers "how well are the providers serving us", as a module-level SQL constant and one
function returning a `Table`. The query conventions are in `reports.py`, which registers these
reports under their command-line names.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.analytics.report_common import Table, check_days, now_param, run_query
from pipeline.transport.clickhouse import ClickHouseUsageStore

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
    check_days(days)
    exact = exact or bool(only.tenant or only.task_type)  # the rollup keeps model and provider only
    params = only.parameters() if exact else {"model": only.model}
    rows = run_query(store, LATENCY_BY_MODEL_EXACT if exact else LATENCY_BY_MODEL, days=days, now=now_param(now),
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
    check_days(days)
    rows = run_query(store, RELIABILITY_BY_PROVIDER, days=days, now=now_param(now), **only.parameters())
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
    check_days(days)
    rows = run_query(store, ERRORS_BY_PROVIDER_CODE, days=days, now=now_param(now), **only.parameters())
    return Table(
        f"Errors by provider and error code (last {days} days{only.describe()})",
        ("provider", "error_code", "errors", "pct_of_calls", "pct_of_errors", "cost_usd"),
        rows,
    )
