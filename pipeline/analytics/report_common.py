"""What every usage report shares: the `Table` it returns and how its query is bound and run.

The report modules (`cost_reports.py`, `reliability_reports.py`, `top_reports.py`) and the
renderers (`tables.py`, `report_html.py`) depend on this alone, so the queries and their
rendering never import each other. The query conventions (`{db}`, parameters, FINAL, windows)
are described in `reports.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.transport.clickhouse import ClickHouseUsageStore


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def now_param(now: datetime | None) -> str:
    """`now` as the text of a DateTime64(3, 'UTC') parameter (naive datetimes are taken as UTC)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def check_days(days: int) -> None:
    """A calendar-day window needs at least today: reject 0 or less before any query runs."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")


def run_query(store: ClickHouseUsageStore, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    """Run a report query on the store's database, its values bound as query parameters (never inlined)."""
    return store.query_sync(sql.replace("{db}", store.database), parameters)
