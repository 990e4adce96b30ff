"""Time every analyst report on a large synthetic usage table in chDB.

    .venv/bin/python bench/report_queries.py [--rows 10000000] [--days 30] [--data-dir DIR]

1. Generates `--rows` attempts with one INSERT ... SELECT FROM numbers(N) into `llm_usage`
   (its materialized views fill the rollups as in production), then re-inserts 0.1% of them as
   re-delivered duplicates so FINAL has work to do. Deterministic: every value is a hash of the
   row number. Shape: rows come in pairs; the first row of a pair is a request's first attempt,
   8% of which fail; then the second row is that request's fallback to another model (3% of
   those fail too), otherwise it is a separate one-attempt request (2% fail). 50 tenants
   (skewed), 5 task types, 6 models on 4 providers, ~60 days of timestamps
   (2026-01-15 .. 2026-03-16), costs from per-token prices, log-spread latencies.
2. Runs each report of `pipeline.analytics.reports.REPORTS` (plus the exact latency variant) three times
   with now = 2026-03-16 00:00 UTC and prints the best time of each.

The scratch chDB directory (default: a temporary one, removed afterwards) must not be in use by
another process: chDB takes one data path per process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NOW = datetime(2026, 3, 16, tzinfo=UTC)
BASE_MS = 1768435200000  # 2026-01-15 00:00:00 UTC
SPAN_MS = 60 * 86_400_000

GENERATE = """
INSERT INTO {db}.llm_usage
    (event_id, request_id, attempt, ts, tenant, task_type, requested_model, model, provider, deployment,
     status, error_code, http_status, is_fallback, is_final, route_skipped, budget_downgrade,
     prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, cost_usd,
     latency_ms, ttft_ms, attributes, kafka_topic, kafka_partition, kafka_offset)
WITH
    ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'claude-haiku', 'llama-3-70b', 'mistral-large'] AS models,
    ['openai', 'openai', 'anthropic', 'anthropic', 'groq', 'mistral'] AS providers,
    [2.5e-6, 0.15e-6, 3e-6, 1e-6, 0.59e-6, 2e-6] AS price_in,
    [10e-6, 0.6e-6, 15e-6, 5e-6, 0.79e-6, 6e-6] AS price_out,
    [900., 450., 1100., 600., 300., 800.] AS base_latency,
    ['summarize', 'classify', 'extract', 'reason', 'chat'] AS tasks,
    intDiv(number, 2) AS pair,
    number % 2 = 1 AS second,
    cityHash64(pair, 1) AS h1,
    cityHash64(number, 2) AS h2,
    h1 % 100 < 8 AS first_failed,
    second AND first_failed AS fallback_row,
    second AND NOT first_failed AS own_request,
    if(own_request, cityHash64(pair, 3), h1) AS hr,
    hr % 6 AS m_first,
    if(fallback_row, (m_first + 1 + intDiv(h1, 7) % 5) % 6, m_first) AS mi,
    multiIf(fallback_row, h2 % 100 < 3, own_request, h2 % 100 < 2, first_failed) AS failed,
    h2 % 3 AS err,
    50 + intDiv(h2, 11) % 3000 AS prompt,
    if(failed, 0, 10 + intDiv(h2, 33000) % 800) AS completion
SELECT
    concat('e', toString(number)),
    if(own_request, concat('q', toString(pair), 'b'), concat('q', toString(pair))),
    if(fallback_row, 2, 1),
    fromUnixTimestamp64Milli(toInt64({base_ms} + cityHash64(hr, 4) % {span_ms} + if(fallback_row, 1500, 0)), 'UTC'),
    concat('tenant-', toString(toUInt32(pow((intDiv(hr, 13) % 10000) / 10000, 3) * 50))),
    tasks[intDiv(hr, 101) % 5 + 1],
    models[m_first + 1],
    models[mi + 1],
    providers[mi + 1],
    concat(models[mi + 1], '-1'),
    if(failed, 'error', 'ok'),
    if(failed, ['server_error', 'rate_limited', 'timeout'][err + 1], ''),
    if(failed, [503, 429, 0][err + 1], 200),
    fallback_row,
    second OR NOT first_failed,
    CAST([], 'Array(String)'),
    false,
    prompt, completion, 0, 0, prompt + completion,
    toDecimal64(round(if(failed AND err != 2, 0, prompt * price_in[mi + 1] + completion * price_out[mi + 1]), 9), 9),
    if(failed AND err = 2, 30000., round(base_latency[mi + 1] * exp((intDiv(h2, 1000003) % 1000) / 1000 * 1.6), 3)),
    0.,
    CAST(map(), 'Map(String, String)'),
    'llm.usage', toInt32(number % 12), toInt64(number)
FROM numbers({rows})
"""

DUPLICATES = """
INSERT INTO {db}.llm_usage ({columns})
SELECT {columns} FROM {db}.llm_usage WHERE cityHash64(event_id) % 1000 = 0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30, help="the reports' window")
    parser.add_argument("--runs", type=int, default=3, help="time each report this many times; report the best")
    parser.add_argument("--data-dir", type=Path, default=None, help="scratch chDB directory (default: a temp dir)")
    args = parser.parse_args()

    from pipeline.analytics.reports import REPORTS, ReportOptions, latency_by_model
    from pipeline.catalog import load_catalog
    from pipeline.transport.clickhouse import USAGE_COLUMNS, ClickHouseUsageStore

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-reports-"))
    store = ClickHouseUsageStore(f"chdb://{data_dir}", "bench")
    try:
        store.migrate_sync()
        db = store.database

        def command(sql: str) -> None:
            """INSERT ... SELECT returns no rows: run it as a command, on the store's thread and session."""

            def run() -> None:
                session = getattr(store, "_session", None)
                if session is None:
                    store._connect().command(sql)
                    return
                with session() as client:
                    client.command(sql)

            store._executor.submit(run).result()

        command(f"TRUNCATE TABLE IF EXISTS {db}.llm_usage")
        for rollup in ("llm_cost_daily", "llm_latency_hourly", "llm_spend_monthly"):
            command(f"TRUNCATE TABLE IF EXISTS {db}.{rollup}")
        t0 = time.perf_counter()
        command(GENERATE.replace("{db}", db).format(rows=args.rows, base_ms=BASE_MS, span_ms=SPAN_MS))
        generated = time.perf_counter() - t0
        t1 = time.perf_counter()
        command(DUPLICATES.replace("{db}", db).format(columns=", ".join(USAGE_COLUMNS)))
        duplicated = time.perf_counter() - t1
        stored = store.query_sync(f"SELECT count() FROM {db}.llm_usage")[0][0]
        parts = store.query_sync(f"SELECT count() FROM system.parts WHERE database = '{db}' "
                                 "AND table = 'llm_usage' AND active")[0][0]
        size = store.query_sync(f"SELECT formatReadableSize(sum(bytes_on_disk)) FROM system.parts "
                                f"WHERE database = '{db}' AND active")[0][0]
        print(f"generated {args.rows:,} rows in {generated:.1f} s ({args.rows / generated:,.0f} rows/s, "
              "materialized views included)")
        print(f"re-inserted {stored - args.rows:,} duplicates in {duplicated:.1f} s; "
              f"{stored:,} rows stored, {parts} active parts of llm_usage, {size} on disk (all tables)")

        options = ReportOptions(days=args.days, now=NOW, limit=10,
                                cost_controls=load_catalog(REPO / "config").routing.cost_controls)
        cases = {name: (lambda r=report: r(store, options)) for name, report in REPORTS.items()}
        cases["latency (exact, raw FINAL)"] = lambda: latency_by_model(store, days=args.days, now=NOW, exact=True)
        print(f"\nreport queries, now = {NOW:%Y-%m-%d %H:%M} UTC, --days {args.days}, best of {args.runs}:")
        print(f"{'report':<28} {'seconds':>8} {'rows':>6}")
        for name, run in cases.items():
            best, rows = float("inf"), 0
            for _ in range(args.runs):
                t = time.perf_counter()
                rows = len(run().rows)
                best = min(best, time.perf_counter() - t)
            print(f"{name:<28} {best:>8.3f} {rows:>6}")
    finally:
        store.close()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
