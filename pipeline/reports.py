"""Analyst queries over the usage table; the same SQL runs on chDB and a ClickHouse server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.transport.clickhouse import ClickHouseUsageStore


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


COST_BY_MODEL_TASK_TENANT = """
SELECT model, task_type, tenant,
       count()                AS calls,
       countIf(status = 'ok') AS ok,
       countIf(status != 'ok') AS failed,
       sum(prompt_tokens)     AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd)          AS cost_usd
FROM {db}.llm_usage FINAL
WHERE ts >= now64(3) - INTERVAL {days:UInt32} DAY
GROUP BY model, task_type, tenant
ORDER BY cost_usd DESC, calls DESC, model, task_type, tenant
"""


def cost_by_model_task_tenant(store: ClickHouseUsageStore, *, days: int = 30) -> Table:
    """Cost and call counts by model, task type and tenant over the last `days` days."""
    rows = store.query_sync(COST_BY_MODEL_TASK_TENANT.replace("{db}", store.database), {"days": days})
    return Table(
        f"Cost by model, task type and tenant (last {days} days)",
        ("model", "task_type", "tenant", "calls", "ok", "failed", "prompt_tokens", "completion_tokens", "cost_usd"),
        rows,
    )
