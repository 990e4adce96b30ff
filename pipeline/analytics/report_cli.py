"""What `pipeline report` does: pick reports, print them, optionally write the HTML page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from pipeline.analytics.filters import ANY_ROWS, RowFilter
from pipeline.analytics.report_common import Table
from pipeline.analytics.report_html import charts_for, write_html
from pipeline.analytics.reports import DEFAULT_REPORT, REPORTS, ReportOptions
from pipeline.analytics.tables import plain_value as _plain
from pipeline.analytics.tables import print_table
from pipeline.catalog import Catalog
from pipeline.catalog.budgets import CostControls
from pipeline.transport.clickhouse import ClickHouseUsageStore

FORMATS = ("table", "json", "csv")


def _print_many(console: Console, tables: dict[str, Table], fmt: str) -> None:
    if fmt == "json":  # one document: {report name: [rows]}
        console.print_json(json.dumps(
            {
                name: [dict(zip(t.columns, map(_plain, row), strict=False)) for row in t.rows]
                for name, t in tables.items()
            }
        ))
        return
    for i, (name, table) in enumerate(tables.items()):
        if fmt == "csv":
            if i:
                console.out("")
            console.out(f"# {name}: {table.title}")
        print_table(console, table, fmt)


def run_report(
    store: ClickHouseUsageStore,
    catalog: Catalog | None,
    *,
    name: str | None,
    days: int,
    fmt: str,
    html: Path | None,
    console: Console,
    limit: int = 10,
    now: datetime | None = None,
    only: RowFilter = ANY_ROWS,
) -> int:
    """Run one report (`name`; None = the default cost report), or `all`; return the exit code.

    `html`: also write one self-contained page with every report and its charts; with no
    `name`, only the page is written. Exit codes: 0 done, 2 bad arguments (unknown report or
    format, days < 1, filters on the budgets report). Query errors propagate.

    `only`: the rows (attempts) every report but `budgets` aggregates; `budgets` compares whole
    spend with whole limits, so it refuses filters when asked for alone and ignores them in `all`.
    """
    if name is not None and name != "all" and name not in REPORTS:
        console.print(f"unknown report {name!r}: choose one of {', '.join(REPORTS)} or all")
        return 2
    if fmt not in FORMATS:
        console.print(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
        return 2
    if days < 1 or limit < 1:
        console.print("--days and --limit must be at least 1")
        return 2
    if name == "budgets" and only.active:
        console.print("the budgets report compares all spend with the limits: --model, --tenant and --task-type "
                      "do not apply to it")
        return 2
    options = ReportOptions(
        days=days, limit=limit, now=now or datetime.now(UTC),  # one clock for every report of the run
        cost_controls=catalog.routing.cost_controls if catalog is not None else CostControls(), only=only,
    )
    wanted = list(REPORTS) if name == "all" or html is not None else [name or DEFAULT_REPORT]
    tables = {n: REPORTS[n](store, options) for n in wanted}
    if html is not None:
        written = write_html(html, [*charts_for(tables), *tables.values()],
                             title=f"LLM usage report ({store.database}, last {days} days)",
                             generated_at=options.now)
        if name is None:
            console.print(f"wrote {written} ({len(tables)} reports)")
            return 0
    shown = tables if name == "all" else {name or DEFAULT_REPORT: tables[name or DEFAULT_REPORT]}
    if len(shown) == 1:
        print_table(console, next(iter(shown.values())), fmt)
    else:
        _print_many(console, shown, fmt)
    return 0
