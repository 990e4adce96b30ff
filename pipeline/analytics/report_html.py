"""One self-contained HTML page of reports: tables plus bar charts drawn as inline SVG.

No JavaScript, no stylesheet or font to fetch, no new dependency: the page works offline and
can be mailed as a single file. Every piece of text from the data is escaped. Charts carry a
`<title>` per bar, which browsers show as a tooltip.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pipeline.analytics.report_common import Table

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
MAX_SERIES = len(PALETTE)  # a stacked chart folds the smallest series beyond this into "other"


@dataclass(frozen=True, slots=True)
class Chart:
    """Bars over categories: `series[name][i]` is the value of that series at `categories[i]`.

    kind "stacked": one bar per category, series stacked; "grouped": one bar per series, side by side.
    unit "usd" formats as dollars, "ms" as milliseconds, anything else as a plain number.
    """

    title: str
    kind: Literal["stacked", "grouped"]
    categories: list[str]
    series: dict[str, list[float]]
    unit: str = ""
    note: str = ""
    width: int = 960
    height: int = 340
    margins: tuple[int, int, int, int] = field(default=(20, 20, 80, 80))  # top, right, bottom, left


# -- building charts from report tables -----------------------------------------------------

def cost_chart(daily: Table) -> Chart:
    """Cost per UTC day stacked by model, from the `daily` report (days without spend shown empty)."""
    ix = {c: i for i, c in enumerate(daily.columns)}
    per: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for row in daily.rows:
        per[str(row[ix["model"]])][row[ix["day"]]] += float(row[ix["cost_usd"]])
    days = sorted({d for m in per.values() for d in m})
    if days and all(isinstance(d, date) for d in days):
        days = [days[0] + timedelta(n) for n in range((days[-1] - days[0]).days + 1)]
    ranked = sorted(per, key=lambda m: (-sum(per[m].values()), m))
    if len(ranked) > MAX_SERIES:
        keep, fold = ranked[: MAX_SERIES - 1], ranked[MAX_SERIES - 1:]
        other: dict[date, float] = defaultdict(float)
        for m in fold:
            for d, v in per[m].items():
                other[d] += v
        per = {**{m: per[m] for m in keep}, "other": other}
        ranked = [*keep, "other"]
    return Chart(
        title="Cost per day by model (USD)", kind="stacked", unit="usd",
        categories=[d.isoformat() if isinstance(d, date) else str(d) for d in days],
        series={m: [per[m].get(d, 0.0) for d in days] for m in ranked},
        note="Every attempt's cost, failed ones included, from llm_usage FINAL.",
    )


def latency_chart(latency: Table) -> Chart:
    """p50/p95/p99 per model (and provider) as grouped bars, from the `latency` report."""
    ix = {c: i for i, c in enumerate(latency.columns)}
    labels = [f"{r[ix['model']]} ({r[ix['provider']]})" for r in latency.rows]
    return Chart(
        title="Latency percentiles by model (ms)", kind="grouped", unit="ms", categories=labels,
        series={p: [float(r[ix[f"{p}_ms"]] or 0.0) for r in latency.rows] for p in ("p50", "p95", "p99")},
        note="Every attempt, failed ones included.",
    )


def charts_for(tables: Mapping[str, Table]) -> list[Chart]:
    """The charts the page draws from whichever of the `daily` and `latency` reports are present."""
    charts = []
    if "daily" in tables:
        charts.append(cost_chart(tables["daily"]))
    if "latency" in tables:
        charts.append(latency_chart(tables["latency"]))
    return charts


# -- formatting -----------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(v: float, unit: str) -> str:
    if unit == "usd":
        return f"${v:,.6f}"
    if unit == "ms":
        return f"{v:,.1f} ms"
    return f"{v:,.6g}"


def _tick(v: float, unit: str) -> str:
    text = f"{v:,.6f}".rstrip("0").rstrip(".") if v else "0"
    return {"usd": f"${text}", "ms": f"{text} ms"}.get(unit, text)


def _cell(v: Any) -> tuple[str, bool]:
    """(text, is_number) of one table cell."""
    if v is None:
        return "\u2013", False
    if isinstance(v, bool):
        return str(v).lower(), False
    if isinstance(v, Decimal):
        return f"{v:,.6f}", True
    if isinstance(v, float):
        return (f"{v:,.6f}".rstrip("0").rstrip(".") if math.isfinite(v) else str(v)), True
    if isinstance(v, int):
        return f"{v:,}", True
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S"), False
    if isinstance(v, date):
        return v.isoformat(), False
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)), False
    return str(v), False


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 x 10^k) up to at least `top`."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


# -- SVG -------------------------------------------------------------------------------------

def _svg(chart: Chart) -> str:
    top, right, bottom, left = chart.margins
    w, h = chart.width, chart.height
    plot_w, plot_h = w - left - right, h - top - bottom
    names = list(chart.series)
    n = len(chart.categories)
    if chart.kind == "stacked":
        peak = max((sum(chart.series[s][i] for s in names) for i in range(n)), default=0.0)
    else:
        peak = max((v for s in names for v in chart.series[s]), default=0.0)
    ticks = _nice_ticks(peak)
    y_max = ticks[-1]

    def y(v: float) -> float:
        return top + plot_h - (v / y_max) * plot_h

    out = [f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           + f'aria-label="{_e(chart.title)}">']
    for t in ticks:  # grid and y labels
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" class="tick">'
                   f'{_e(_tick(t, chart.unit))}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/>')
    if n == 0:
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" class="tick">'
                   "no data</text>")
    band = plot_w / max(n, 1)
    label_every = max(1, math.ceil(n / 20))
    for i, category in enumerate(chart.categories):
        x0 = left + i * band
        if chart.kind == "stacked":
            bar_w, base = band * 0.8, 0.0
            for k, name in enumerate(names):
                v = chart.series[name][i]
                if v <= 0:
                    continue
                y_top, y_bottom = y(base + v), y(base)
                out.append(
                    f'<rect x="{x0 + band * 0.1:.2f}" y="{y_top:.2f}" width="{bar_w:.2f}" '
                    f'height="{max(y_bottom - y_top, 0.5):.2f}" fill="{PALETTE[k % len(PALETTE)]}">'
                    f"<title>{_e(category)} · {_e(name)}: {_e(_value(v, chart.unit))}</title></rect>"
                )
                base += v
        else:
            bar_w = band * 0.8 / max(len(names), 1)
            for k, name in enumerate(names):
                v = chart.series[name][i]
                out.append(
                    f'<rect x="{x0 + band * 0.1 + k * bar_w:.2f}" y="{y(v):.2f}" width="{bar_w * 0.92:.2f}" '
                    f'height="{max(y(0) - y(v), 0.0):.2f}" fill="{PALETTE[k % len(PALETTE)]}">'
                    f"<title>{_e(category)} · {_e(name)}: {_e(_value(v, chart.unit))}</title></rect>"
                )
        if i % label_every == 0:
            cx, cy = x0 + band / 2, top + plot_h + 14
            out.append(f'<text x="{cx:.1f}" y="{cy}" text-anchor="end" class="tick" '
                       f'transform="rotate(-35 {cx:.1f} {cy})">{_e(category)}</text>')
    out.append("</svg>")
    return "".join(out)


def _legend(chart: Chart) -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'
        f"{_e(name)}</span>"
        for k, name in enumerate(chart.series)
    )
    return f'<div class="legend">{items}</div>'


def _table(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for v in row:
            text, number = _cell(v)
            cells.append(f'<td class="num">{_e(text)}</td>' if number else f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not table.rows:
        body.append(f'<tr><td colspan="{len(table.columns)}" class="empty">no rows</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;margin-bottom:16px}nav a{margin-right:12px;color:#4e79a7;text-decoration:none}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e4e4e4}
th{text-align:left;background:#f6f6f6;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.empty{color:#888;text-align:center}tbody tr:hover{background:#fafafa}
.chart{max-width:100%;height:auto}.chart .grid{stroke:#eee}.chart .axis{stroke:#999}
.chart .tick{font-size:11px;fill:#555}.legend{margin:4px 0 0}.key{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.note{color:#666;font-size:12px}
"""


def write_html(
    path: Path | str, tables_and_series: Iterable[Table | Chart], *, title: str = "LLM usage report",
    generated_at: datetime | None = None,
) -> Path:
    """Write one self-contained page: each item in order, a `Chart` as SVG, a `Table` as a table."""
    items: Sequence[Table | Chart] = list(tables_and_series)
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#s{i}">{_e(item.title)}</a>' for i, item in enumerate(items))
    sections = []
    for i, item in enumerate(items):
        if isinstance(item, Chart):
            note = f'<div class="note">{_e(item.note)}</div>' if item.note else ""
            sections.append(f'<section id="s{i}"><h2>{_e(item.title)}</h2>{_svg(item)}{_legend(item)}{note}'
                            "</section>")
        else:
            sections.append(f'<section id="s{i}"><h2>{_e(item.title)}</h2>{_table(item)}</section>')
    page = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><div class="meta">Generated {_e(generated)}</div><nav>{nav}</nav>'
        + "".join(sections)
        + "</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
