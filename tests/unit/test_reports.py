"""Every analyst report against a fixed, hand-computed data set in chDB.

The data set (now = 2026-03-15 12:00 UTC; prices in USD; "ok" attempts have 100 prompt and
50 completion tokens, failed ones none):

  req  tenant  task       day     attempt model/provider        status                 final  cost   latency
  R0   acme    summarize  Feb 20  1 m-gpt/openai                ok                     yes    0.100  150
  R1   acme    summarize  Mar 14  1 m-gpt/openai                ok                     yes    0.010  100
  R2   acme    summarize  Mar 14  1 m-gpt/openai                error server_error 503 no     0      200
                                  2 m-claude/anthropic (fb)     ok                     yes    0.020  300
  R3   globex  classify   Mar 14  1 m-llama/groq                ok                     yes    0.001  50
  R4   globex  classify   Mar 14  1 m-llama/groq                error timeout          no     0.002  1000
                                  2 m-llama/groq (retry)        ok                     yes    0.001  60
  R5   acme    classify   Mar 15  1 m-gpt/openai                ok                     yes    0.005  120
  R6   acme    summarize  Mar 15  1 m-gpt/openai                error rate_limited 429 no     0      10
                                  2 m-claude/anthropic (fb)     error server_error 500 yes    0.003  400
  R7   globex  summarize  Mar 15  1 m-claude/anthropic          ok                     yes    0.030  250
  R8   globex  classify   Mar 15  1 m-llama/groq                ok                     yes    0.002  70  <- twice

12 distinct events; R8's event is inserted a second time in a later insert (a re-delivery).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from pipeline.analytics.report_html import write_html
from pipeline.analytics.reports import (
    REPORTS,
    ReportOptions,
    budget_burn,
    cost_by_day,
    cost_by_model_task_tenant,
    errors_by_provider_code,
    latency_by_model,
    reliability_by_provider,
    top_requests,
    top_tenants,
    wasted_cost,
)
from pipeline.catalog.budgets import CostControls
from pipeline.contracts.models import AttemptOutcome, ErrorCode, UsageEvent
from pipeline.transport.clickhouse import ClickHouseUsageStore, StoredUsage

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
PROVIDER = {"m-gpt": "openai", "m-claude": "anthropic", "m-llama": "groq"}


def ev(n: int, req: str, tenant: str, task: str, ts: str, attempt: int, model: str, cost: str, latency: float,
       *, error: ErrorCode | None = None, http: int = 200, final: bool = True, fallback: bool = False) -> UsageEvent:
    ok = error is None
    return UsageEvent(
        event_id=f"e{n}", request_id=req, tenant=tenant, task_type=task, model=model, provider=PROVIDER[model],
        requested_model="m-gpt" if task == "summarize" else "m-llama",
        status=AttemptOutcome.OK if ok else AttemptOutcome.ERROR, error_code=error, http_status=http,
        prompt_tokens=100 if ok else 0, completion_tokens=50 if ok else 0, total_tokens=150 if ok else 0,
        cost_usd=float(cost), latency_ms=latency, attempt=attempt, is_final=final, is_fallback=fallback,
        ts=datetime.fromisoformat(ts).replace(tzinfo=UTC),
    )


EVENTS = [
    ev(0, "R0", "acme", "summarize", "2026-02-20 10:00:00", 1, "m-gpt", "0.100", 150),
    ev(1, "R1", "acme", "summarize", "2026-03-14 09:00:00", 1, "m-gpt", "0.010", 100),
    ev(2, "R2", "acme", "summarize", "2026-03-14 10:00:00", 1, "m-gpt", "0", 200,
       error=ErrorCode.SERVER_ERROR, http=503, final=False),
    ev(3, "R2", "acme", "summarize", "2026-03-14 10:00:01", 2, "m-claude", "0.020", 300, fallback=True),
    ev(4, "R3", "globex", "classify", "2026-03-14 11:00:00", 1, "m-llama", "0.001", 50),
    ev(5, "R4", "globex", "classify", "2026-03-14 12:00:00", 1, "m-llama", "0.002", 1000,
       error=ErrorCode.TIMEOUT, http=0, final=False),
    ev(6, "R4", "globex", "classify", "2026-03-14 12:00:02", 2, "m-llama", "0.001", 60),
    ev(7, "R5", "acme", "classify", "2026-03-15 08:00:00", 1, "m-gpt", "0.005", 120),
    ev(8, "R6", "acme", "summarize", "2026-03-15 09:00:00", 1, "m-gpt", "0", 10,
       error=ErrorCode.RATE_LIMITED, http=429, final=False),
    ev(9, "R6", "acme", "summarize", "2026-03-15 09:00:01", 2, "m-claude", "0.003", 400,
       error=ErrorCode.SERVER_ERROR, http=500, fallback=True),
    ev(10, "R7", "globex", "summarize", "2026-03-15 10:00:00", 1, "m-claude", "0.030", 250),
    ev(11, "R8", "globex", "classify", "2026-03-15 11:00:00", 1, "m-llama", "0.002", 70),
]
DUPLICATE = EVENTS[11]

CONTROLS = CostControls.model_validate({
    "global": {"daily_usd": 0.5, "monthly_usd": 1.0},
    "default_tenant": {"daily_usd": 0.05, "monthly_usd": 0.1},
    "tenants": {"acme": {"daily_usd": 0.1, "monthly_usd": 0.2}, "initech": {"monthly_usd": 1.0}},
    "task_types": {"summarize": {"monthly_usd": 0.5}},
})

ELAPSED = 14.5 / 31  # March 15 12:00 is 14.5 days into a 31-day month


def _stored(events: list[UsageEvent], first_offset: int = 0) -> list[StoredUsage]:
    return [StoredUsage(e, kafka_partition=0, kafka_offset=first_offset + i, kafka_topic="llm.usage")
            for i, e in enumerate(events)]


def _store(chdb_dir: Path, *, duplicate: bool) -> ClickHouseUsageStore:
    # Held for the module: these tests check what the reports say, not engine sharing (see
    # test_usage_sink.py); reopening chDB for every query made this module take minutes.
    store = ClickHouseUsageStore(f"chdb://{chdb_dir}", f"rep_{uuid.uuid4().hex[:10]}", embedded_hold_s=3600)
    store.migrate_sync()
    asyncio.run(store.insert(_stored(EVENTS)))
    if duplicate:  # re-delivered later: a separate insert, so a separate part until a merge
        asyncio.run(store.insert(_stored([DUPLICATE], first_offset=100)))
    return store


@pytest.fixture(scope="module")
def store(chdb_dir: Path):
    s = _store(chdb_dir, duplicate=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def clean_store(chdb_dir: Path):
    """The same events without the duplicate: here the rollups must agree with the raw table."""
    s = _store(chdb_dir, duplicate=False)
    yield s
    s.close()


def test_the_duplicate_is_stored_twice_and_final_reads_it_once(store: ClickHouseUsageStore) -> None:
    db = store.database
    assert store.query_sync(f"SELECT count() FROM {db}.llm_usage")[0][0] == 13
    assert store.query_sync(f"SELECT count() FROM {db}.llm_usage FINAL")[0][0] == 12


def test_cost_by_model_task_tenant(store: ClickHouseUsageStore) -> None:
    table = cost_by_model_task_tenant(store, days=30, now=NOW)
    by_key = {r[:3]: r[3:] for r in table.rows}
    #                                         calls ok failed prompt completion cost
    assert by_key[("m-gpt", "summarize", "acme")] == (4, 2, 2, 200, 100, D("0.110"))  # R0 R1 R2 R6
    assert by_key[("m-llama", "classify", "globex")] == (4, 3, 1, 300, 150, D("0.006"))  # R8 once
    assert by_key[("m-claude", "summarize", "acme")] == (2, 1, 1, 100, 50, D("0.023"))
    assert by_key[("m-claude", "summarize", "globex")] == (1, 1, 0, 100, 50, D("0.030"))
    assert by_key[("m-gpt", "classify", "acme")] == (1, 1, 0, 100, 50, D("0.005"))
    assert len(by_key) == 5
    assert table.rows[0][:3] == ("m-gpt", "summarize", "acme")  # most expensive first


def test_cost_by_day(store: ClickHouseUsageStore) -> None:
    table = cost_by_day(store, days=30, now=NOW)
    assert table.columns == ("day", "tenant", "task_type", "model", "calls", "failed", "prompt_tokens",
                             "completion_tokens", "cost_usd")
    assert table.rows == [
        (date(2026, 2, 20), "acme", "summarize", "m-gpt", 1, 0, 100, 50, D("0.100")),
        (date(2026, 3, 14), "acme", "summarize", "m-claude", 1, 0, 100, 50, D("0.020")),
        (date(2026, 3, 14), "acme", "summarize", "m-gpt", 2, 1, 100, 50, D("0.010")),
        (date(2026, 3, 14), "globex", "classify", "m-llama", 3, 1, 200, 100, D("0.004")),
        (date(2026, 3, 15), "acme", "classify", "m-gpt", 1, 0, 100, 50, D("0.005")),
        (date(2026, 3, 15), "acme", "summarize", "m-claude", 1, 1, 0, 0, D("0.003")),
        (date(2026, 3, 15), "acme", "summarize", "m-gpt", 1, 1, 0, 0, D(0)),
        (date(2026, 3, 15), "globex", "classify", "m-llama", 1, 0, 100, 50, D("0.002")),  # duplicate once
        (date(2026, 3, 15), "globex", "summarize", "m-claude", 1, 0, 100, 50, D("0.030")),
    ]
    # days=2 is today and yesterday: February drops out; days=1 is today only.
    assert {r[0] for r in cost_by_day(store, days=2, now=NOW).rows} == {date(2026, 3, 14), date(2026, 3, 15)}
    assert {r[0] for r in cost_by_day(store, days=1, now=NOW).rows} == {date(2026, 3, 15)}


def test_budget_burn(store: ClickHouseUsageStore) -> None:
    table = budget_burn(store, CONTROLS, now=NOW)
    assert table.columns == ("scope", "name", "monthly_budget_usd", "mtd_usd", "mtd_pct", "forecast_usd",
                             "forecast_pct", "daily_budget_usd", "today_usd", "today_pct")
    rows = {(r[0], r[1]): r[2:] for r in table.rows}
    assert [r[:2] for r in table.rows] == [("global", ""), ("tenant", "acme"), ("tenant", "initech"),
                                          ("default_tenant", "globex"), ("task_type", "summarize")]
    # March spend: 0.010 + 0.020 + 0.001 + 0.002 + 0.001 + 0.005 + 0.003 + 0.030 + 0.002 (February excluded)
    budget, mtd, mtd_pct, forecast, forecast_pct, daily, today, today_pct = rows[("global", "")]
    assert (budget, mtd, mtd_pct, daily, today, today_pct) == (1.0, D("0.074"), 7.4, 0.5, D("0.040"), 8.0)
    assert forecast == pytest.approx(0.074 / ELAPSED) and forecast == pytest.approx(0.15820689655)
    assert forecast_pct == 15.82
    # acme: 0.010 + 0.020 + 0.005 + 0.003; today 0.005 + 0.003
    budget, mtd, mtd_pct, forecast, forecast_pct, daily, today, today_pct = rows[("tenant", "acme")]
    assert (budget, mtd, mtd_pct, daily, today, today_pct) == (0.2, D("0.038"), 19.0, 0.1, D("0.008"), 8.0)
    assert forecast == pytest.approx(0.038 * 31 / 14.5) and forecast_pct == 40.62
    # initech: listed, nothing spent
    assert rows[("tenant", "initech")] == (1.0, D(0), 0.0, 0.0, 0.0, None, D(0), None)
    # globex is not listed: the default_tenant limits; 0.001 + 0.002 + 0.001 + 0.030 + 0.002; today 0.032
    budget, mtd, mtd_pct, forecast, forecast_pct, daily, today, today_pct = rows[("default_tenant", "globex")]
    assert (budget, mtd, mtd_pct, daily, today, today_pct) == (0.1, D("0.036"), 36.0, 0.05, D("0.032"), 64.0)
    assert forecast == pytest.approx(0.036 * 31 / 14.5) and forecast_pct == 76.97
    # summarize: 0.010 + 0.020 + 0.003 + 0.030; today 0.033; no daily limit
    budget, mtd, mtd_pct, forecast, forecast_pct, daily, today, today_pct = rows[("task_type", "summarize")]
    assert (budget, mtd, mtd_pct, daily, today, today_pct) == (0.5, D("0.063"), 12.6, None, D("0.033"), None)
    assert forecast == pytest.approx(0.063 * 31 / 14.5) and forecast_pct == 26.94


def test_latency_exact_reads_each_event_once(store: ClickHouseUsageStore) -> None:
    table = latency_by_model(store, days=30, now=NOW, exact=True)
    # Linear interpolation at rank q*(n-1) of the sorted values:
    #   m-claude [250, 300, 400]:         p50 rank 1 = 300; p95 rank 1.9 = 390; p99 rank 1.98 = 398
    #   m-gpt    [10, 100, 120, 150, 200]: p50 = 120; p95 rank 3.8 = 190; p99 rank 3.96 = 198
    #   m-llama  [50, 60, 70, 1000]:      p50 rank 1.5 = 65; p95 rank 2.85 = 860.5; p99 rank 2.97 = 972.1
    assert table.rows == [
        ("m-claude", "anthropic", 3, 300.0, 390.0, 398.0),
        ("m-gpt", "openai", 5, 120.0, 190.0, 198.0),
        ("m-llama", "groq", 4, 65.0, 860.5, 972.1),
    ]


def test_latency_rollup_counts_a_duplicate_twice(store: ClickHouseUsageStore) -> None:
    rows = {r[0]: r[2:] for r in latency_by_model(store, days=30, now=NOW).rows}
    assert rows["m-gpt"] == (5, 120.0, 190.0, 198.0)
    # m-llama with 70 twice: [50, 60, 70, 70, 1000]: p50 = 70; p95 rank 3.8 = 814; p99 rank 3.96 = 962.8
    assert rows["m-llama"] == (5, 70.0, 814.0, 962.8)


def test_reliability_by_provider(store: ClickHouseUsageStore) -> None:
    table = reliability_by_provider(store, days=30, now=NOW)
    assert table.rows == [
        # provider   calls errors err%  started fell_back fb%  as_fallback
        ("anthropic", 3, 1, 33.33, 1, 0, 0.0, 2),  # R7 started there; R2 and R6 fell back to it
        ("groq", 4, 1, 25.0, 3, 0, 0.0, 0),  # R4 retried the same model: not a fallback
        ("openai", 5, 2, 40.0, 5, 2, 40.0, 0),  # R2 and R6 of R0 R1 R2 R5 R6 fell back
    ]


def test_errors_by_provider_code(store: ClickHouseUsageStore) -> None:
    assert errors_by_provider_code(store, days=30, now=NOW).rows == [
        # provider    code            errors % of calls  % of errors  cost
        ("anthropic", "server_error", 1, 33.33, 100.0, D("0.003")),
        ("groq", "timeout", 1, 25.0, 100.0, D("0.002")),
        ("openai", "rate_limited", 1, 20.0, 50.0, D(0)),
        ("openai", "server_error", 1, 20.0, 50.0, D(0)),
    ]


def test_wasted_cost(store: ClickHouseUsageStore) -> None:
    # Not final: R2's m-gpt (0), R4's first m-llama (0.002), R6's m-gpt (0).
    # Failed replies: R6's final m-claude attempt (0.003).
    # Totals per model: m-gpt 0.100 + 0.010 + 0.005 = 0.115; m-claude 0.020 + 0.003 + 0.030 = 0.053;
    # m-llama 0.001 + 0.002 + 0.001 + 0.002 = 0.006; all 0.174.
    assert wasted_cost(store, days=30, now=NOW).rows == [
        # model       provider     nf  nf_usd       fr fr_usd       wasted        total        wasted%
        ("m-claude", "anthropic", 0, D(0), 1, D("0.003"), D("0.003"), D("0.053"), 5.66),
        ("m-llama", "groq", 1, D("0.002"), 0, D(0), D("0.002"), D("0.006"), 33.33),
        ("m-gpt", "openai", 2, D(0), 0, D(0), D(0), D("0.115"), 0.0),
        ("(all)", "(all)", 3, D("0.002"), 1, D("0.003"), D("0.005"), D("0.174"), 2.87),
    ]


def test_top_tenants_and_requests(store: ClickHouseUsageStore) -> None:
    assert top_tenants(store, days=30, now=NOW).rows == [
        # acme: R0 R1 R2 R5 R6, 7 attempts; globex: R3 R4 R7 R8, 5 attempts
        ("acme", 5, 7, D("0.138"), 79.31, D("0.0276")),
        ("globex", 4, 5, D("0.036"), 20.69, D("0.009")),
    ]
    assert [r[0] for r in top_tenants(store, days=30, now=NOW, limit=1).rows] == ["acme"]
    rows = top_requests(store, days=30, now=NOW, limit=3).rows
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in rows] == [
        ("R0", "acme", "summarize", 1, "m-gpt", "ok", D("0.100")),
        ("R7", "globex", "summarize", 1, "m-claude", "ok", D("0.030")),
        ("R2", "acme", "summarize", 2, "m-gpt > m-claude", "ok", D("0.020")),
    ]
    assert rows[2][6].replace(tzinfo=None) == datetime(2026, 3, 14, 10, 0)


def test_registry_runs_every_report(store: ClickHouseUsageStore) -> None:
    options = ReportOptions(days=30, now=NOW, limit=5, cost_controls=CONTROLS)
    for name, report in REPORTS.items():
        table = report(store, options)
        assert table.rows, name
        assert all(len(row) == len(table.columns) for row in table.rows), name


def test_rollups_agree_with_the_raw_table(clean_store: ClickHouseUsageStore) -> None:
    db = clean_store.database
    q = clean_store.query_sync
    daily_raw = q(f"""SELECT toDate(ts), tenant, task_type, model, provider, status, count(), sum(prompt_tokens),
                      sum(completion_tokens), sum(cost_usd) FROM {db}.llm_usage FINAL
                      GROUP BY ALL ORDER BY ALL""")
    daily_rollup = q(f"""SELECT day, tenant, task_type, model, provider, status, sum(calls), sum(prompt_tokens),
                         sum(completion_tokens), sum(cost_usd) FROM {db}.llm_cost_daily
                         GROUP BY ALL ORDER BY ALL""")
    assert daily_rollup == daily_raw and len(daily_raw) == 11  # (day, tenant, task, model, status) keys
    monthly_raw = q(f"SELECT toStartOfMonth(ts), tenant, sum(cost_usd) FROM {db}.llm_usage FINAL "
                    "GROUP BY ALL ORDER BY ALL")
    monthly_rollup = q(f"SELECT month, tenant, sum(cost_usd) FROM {db}.llm_spend_monthly GROUP BY ALL ORDER BY ALL")
    assert monthly_rollup == monthly_raw == [
        (date(2026, 2, 1), "acme", D("0.100")),
        (date(2026, 3, 1), "acme", D("0.038")),
        (date(2026, 3, 1), "globex", D("0.036")),
    ]
    rollup = latency_by_model(clean_store, days=30, now=NOW).rows
    exact = latency_by_model(clean_store, days=30, now=NOW, exact=True).rows
    assert [r[:3] for r in rollup] == [r[:3] for r in exact]
    for a, b in zip(rollup, exact, strict=True):
        assert a[3:] == pytest.approx(b[3:])


def test_rollups_count_a_redelivered_event_twice(store: ClickHouseUsageStore) -> None:
    """Documented limit: materialized views fire per insert, before any deduplication."""
    db = store.database
    sql = (f"SELECT sum(calls), sum(cost_usd) FROM {db}.llm_cost_daily "
           "WHERE day = '2026-03-15' AND tenant = 'globex' AND model = 'm-llama'")
    assert store.query_sync(sql)[0] == (2, D("0.004"))
    assert store.query_sync(f"SELECT sum(cost_usd) FROM {db}.llm_spend_monthly "
                            "WHERE month = '2026-03-01' AND tenant = 'globex'")[0][0] == D("0.038")


def test_html_page_is_self_contained(store: ClickHouseUsageStore, tmp_path: Path) -> None:
    from pipeline.analytics.report_html import charts_for

    options = ReportOptions(days=30, now=NOW, limit=5, cost_controls=CONTROLS)
    tables = {name: report(store, options) for name, report in REPORTS.items()}
    out = tmp_path / "report.html"
    write_html(out, [*charts_for(tables), *tables.values()], title="Usage <report> & more")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http" not in page.lower()  # no CDN, no external src/href, no namespaces to fetch
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert page.count("<svg") == 2 and page.count("</svg>") == 2
    assert "Usage &lt;report&gt; &amp; more" in page
    assert "m-claude" in page and "R7" in page and "Cost wasted on failed attempts" in page
    # one bar per model and day with spend, each with its tooltip
    assert "<title>2026-03-14 · m-claude: $0.020000</title>" in page


def _console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=250, color_system=None)


def test_run_report_default_all_unknown_and_html(store: ClickHouseUsageStore, tmp_path: Path) -> None:
    import json

    from pipeline.analytics.report_cli import run_report
    from pipeline.catalog import Catalog
    from pipeline.catalog.routing import RoutingPolicy

    catalog = Catalog(models={}, routing=RoutingPolicy(cost_controls=CONTROLS))
    console = _console()
    assert run_report(store, catalog, name=None, days=30, fmt="json", html=None, console=console, now=NOW) == 0
    rows = json.loads(console.file.getvalue())
    assert {(r["model"], r["tenant"]) for r in rows} >= {("m-gpt", "acme"), ("m-llama", "globex")}

    console = _console()
    assert run_report(store, catalog, name="all", days=30, fmt="json", html=None, console=console, now=NOW) == 0
    doc = json.loads(console.file.getvalue())
    assert list(doc) == list(REPORTS)
    assert doc["budgets"][0]["scope"] == "global" and doc["budgets"][0]["mtd_usd"] == pytest.approx(0.074)

    console = _console()
    assert run_report(store, catalog, name="waste", days=30, fmt="csv", html=None, console=console, now=NOW) == 0
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("model,provider,not_final_attempts") and lines[-1].startswith("(all),(all),3,")

    console = _console()
    assert run_report(store, catalog, name="nope", days=30, fmt="table", html=None, console=console) == 2
    assert "unknown report 'nope'" in console.file.getvalue()

    console, page = _console(), tmp_path / "out.html"
    assert run_report(store, catalog, name=None, days=30, fmt="table", html=page, console=console, now=NOW) == 0
    assert "wrote" in console.file.getvalue() and page.read_text().count("<svg") == 2


def test_docs_quote_every_query_verbatim() -> None:
    from pipeline.analytics import reports

    doc = (Path(__file__).resolve().parents[2] / "docs" / "analytics.md").read_text(encoding="utf-8")
    constants = [v for k, v in vars(reports).items() if k.isupper() and isinstance(v, str) and "{db}" in v]
    assert len(constants) == 10
    for sql in constants:
        assert sql.replace("{db}", "llm").strip() in doc


def test_the_store_reports_the_highest_stored_offset_per_partition_of_a_topic(store: ClickHouseUsageStore) -> None:
    assert asyncio.run(store.stored_offsets("llm.usage")) == {0: 100}  # the duplicate went in at offset 100
    assert asyncio.run(store.stored_offsets("another.topic")) == {}


def test_spend_this_month_reads_each_event_once_per_tenant_and_task_type(store: ClickHouseUsageStore) -> None:
    spend = {(s.tenant, s.task_type): (s.today_usd, s.month_usd) for s in asyncio.run(store.spend_this_month(NOW))}
    assert spend.keys() == {("acme", "summarize"), ("acme", "classify"), ("globex", "classify"),
                            ("globex", "summarize")}  # February's event is not this month's
    assert spend[("acme", "summarize")] == pytest.approx((0.003, 0.033))
    assert spend[("acme", "classify")] == pytest.approx((0.005, 0.005))
    assert spend[("globex", "classify")] == pytest.approx((0.002, 0.006))  # the duplicate counted once
    assert spend[("globex", "summarize")] == pytest.approx((0.030, 0.030))


def test_restore_spend_raises_every_budget_window_to_the_recorded_spend(store: ClickHouseUsageStore) -> None:
    from pipeline.analytics.spend_restore import restore_spend
    from pipeline.state.budget import InProcessLedger

    ledger = InProcessLedger()
    assert asyncio.run(restore_spend(store, ledger, now=NOW)) == 2 + 2 * 2 + 2 * 2  # global, 2 tenants, 2 task types
    keys = ["global:daily:2026-03-15", "global:monthly:2026-03", "tenant=acme:monthly:2026-03",
            "task_type=classify:daily:2026-03-15"]
    assert asyncio.run(ledger.values(keys)) == [40_000, 74_000, 38_000, 7_000]


# -- row filters (`pipeline report --model/--tenant/--task-type`) ------------------------------

def test_filters_select_the_rows_each_report_aggregates(store: ClickHouseUsageStore) -> None:
    from pipeline.analytics.filters import RowFilter

    globex = RowFilter(tenant="globex")
    table = cost_by_model_task_tenant(store, days=30, now=NOW, only=globex)
    assert table.rows == [  # R7; R3, R4 (two attempts), R8 (its duplicate once)
        ("m-claude", "summarize", "globex", 1, 1, 0, 100, 50, D("0.030")),
        ("m-llama", "classify", "globex", 4, 3, 1, 300, 150, D("0.006")),
    ]
    assert table.title.endswith("(last 30 days, tenant=globex)")
    assert cost_by_day(store, days=30, now=NOW, only=RowFilter(tenant="acme", task_type="classify")).rows == [
        (date(2026, 3, 15), "acme", "classify", "m-gpt", 1, 0, 100, 50, D("0.005")),  # R5 alone
    ]
    assert wasted_cost(store, days=30, now=NOW, only=globex).rows == [
        ("m-llama", "groq", 1, D("0.002"), 0, D(0), D("0.002"), D("0.006"), 33.33),
        ("m-claude", "anthropic", 0, D(0), 0, D(0), D(0), D("0.030"), 0.0),
        ("(all)", "(all)", 1, D("0.002"), 0, D(0), D("0.002"), D("0.036"), 5.56),
    ]


def test_a_model_filter_keeps_its_fallback_calls_and_shares_of_the_filtered_spend(
    store: ClickHouseUsageStore,
) -> None:
    from pipeline.analytics.filters import RowFilter

    claude = RowFilter(model="m-claude")
    assert reliability_by_provider(store, days=30, now=NOW, only=claude).rows == [
        ("anthropic", 3, 1, 33.33, 1, 0, 0.0, 2)]
    assert reliability_by_provider(store, days=30, now=NOW, only=RowFilter(tenant="acme")).rows == [
        ("anthropic", 2, 1, 50.0, 0, 0, 0.0, 2),  # R2 and R6 fell back to it
        ("openai", 5, 2, 40.0, 5, 2, 40.0, 0),
    ]
    assert top_tenants(store, days=30, now=NOW, only=claude).rows == [
        ("globex", 1, 1, D("0.030"), 56.6, D("0.030")),  # R7
        ("acme", 2, 2, D("0.023"), 43.4, D("0.0115")),  # R2's and R6's fallbacks
    ]
    rows = top_requests(store, days=30, now=NOW, limit=3, only=claude).rows
    assert [(r[0], r[3], r[4], r[5], r[7]) for r in rows] == [
        ("R7", 1, "m-claude", "ok", D("0.030")), ("R2", 1, "m-claude", "ok", D("0.020")),
        ("R6", 1, "m-claude", "error", D("0.003"))]
    assert errors_by_provider_code(store, days=30, now=NOW, only=RowFilter(model="m-gpt")).rows == [
        ("openai", "rate_limited", 1, 20.0, 50.0, D(0)), ("openai", "server_error", 1, 20.0, 50.0, D(0))]


def test_latency_reads_the_exact_table_when_the_rollup_cannot_filter(store: ClickHouseUsageStore) -> None:
    from pipeline.analytics.filters import RowFilter

    rollup = latency_by_model(store, days=30, now=NOW, only=RowFilter(model="m-llama"))
    assert rollup.rows == [("m-llama", "groq", 5, 70.0, 814.0, 962.8)]  # the rollup: the duplicate counts
    exact = latency_by_model(store, days=30, now=NOW, only=RowFilter(model="m-llama", tenant="globex"))
    assert exact.rows == [("m-llama", "groq", 4, 65.0, 860.5, 972.1)] and "exact" in exact.title


def test_filter_values_are_parameters_not_sql(store: ClickHouseUsageStore) -> None:
    from pipeline.analytics.filters import RowFilter

    hostile = RowFilter(tenant="acme' OR '1'='1", task_type="x') OR 1=1 --")
    assert top_tenants(store, days=30, now=NOW, only=hostile).rows == []
    assert cost_by_model_task_tenant(store, days=30, now=NOW, only=RowFilter(model="{db}")).rows == []
    with pytest.raises(ValueError, match="--task-type"):
        RowFilter(task_type="x" * 257)


def test_run_report_filters_every_report_but_budgets(store: ClickHouseUsageStore) -> None:
    import json

    from pipeline.analytics.filters import RowFilter
    from pipeline.analytics.report_cli import run_report

    only = RowFilter(tenant="globex")
    console = _console()
    assert run_report(store, None, name="all", days=30, fmt="json", html=None, console=console, now=NOW,
                      only=only) == 0
    doc = json.loads(console.file.getvalue())
    assert {r["tenant"] for r in doc["cost"]} == {"globex"} and [r["tenant"] for r in doc["top-tenants"]] == ["globex"]
    assert doc["budgets"][0]["mtd_usd"] == pytest.approx(0.074)  # whole spend: budgets take no filters
    console = _console()
    assert run_report(store, None, name="budgets", days=30, fmt="table", html=None, console=console,
                      only=only) == 2
    assert "do not apply" in console.file.getvalue()
