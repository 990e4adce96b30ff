"""Report tables on a terminal: one renderer for table, json and csv (reports, the demo)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from pipeline.analytics.report_common import Table


def plain_value(value: Any) -> Any:
    """A JSON- and CSV-friendly form of a ClickHouse value (Decimal, datetime)."""
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if isinstance(value, (Decimal, float)):
        return f"{value:.6f}"
    return str(value)


def print_table(console: Console, table: Table, fmt: str = "table") -> None:
    if fmt == "json":
        console.print_json(json.dumps(
            [dict(zip(table.columns, map(plain_value, row), strict=False)) for row in table.rows]
        ))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table.columns)
        writer.writerows([[plain_value(v) for v in row] for row in table.rows])
        console.out(buffer.getvalue(), end="")
    elif fmt == "table":
        rich_table = RichTable(title=table.title)
        for column in table.columns:
            rich_table.add_column(column, justify="right" if column not in ("model", "task_type", "tenant") else "left")
        for row in table.rows:
            rich_table.add_row(*(_cell(v) for v in row))
        console.print(rich_table)
    else:
        raise ValueError(f"unknown format {fmt!r}: use table, json or csv")
