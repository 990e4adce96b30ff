"""ClickHouse edge: usage rows in, report queries out, through clickhouse-connect only.

The same DDL and SQL run on the embedded engine (`chdb:///path`) and on a server
(`http(s)://host:8123`). Calls are synchronous in clickhouse-connect, so the async
wrappers run them on one dedicated thread (chDB wants a single engine user at a time).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol

from pipeline.contracts import UsageEvent
from pipeline.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

USAGE_COLUMNS = (
    "event_id", "request_id", "attempt", "ts", "tenant", "task_type", "model", "provider", "deployment", "status",
    "error_code", "is_fallback", "route_skipped", "budget_downgrade", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
    "latency_ms", "kafka_partition", "kafka_offset",
)


@dataclass(frozen=True, slots=True)
class StoredUsage:
    """A usage event with where it was read from (for exactly-once bookkeeping)."""

    event: UsageEvent
    kafka_partition: int
    kafka_offset: int


class UsageStore(Protocol):
    async def insert(self, rows: Sequence[StoredUsage]) -> None: ...
    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


def _row(item: StoredUsage) -> list[Any]:
    e = item.event
    return [
        e.event_id, e.request_id, e.attempt, e.ts, e.tenant, e.task_type, e.model, e.provider, e.deployment,
        e.status.value,
        e.error_code.value if e.error_code else "", e.is_fallback, e.route_skipped, e.budget_downgrade,
        e.prompt_tokens, e.completion_tokens,
        e.total_tokens, Decimal(repr(e.cost_usd)).quantize(Decimal("1e-9")), e.latency_ms,
        item.kafka_partition, item.kafka_offset,
    ]


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every packaged migration, in order."""
    out = []
    for entry in resources.files("pipeline.transport.clickhouse_migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out)


class ClickHouseUsageStore:
    """Usage rows and reports in one ClickHouse database (embedded or server)."""

    def __init__(self, url: str, database: str, *, user: str = "default", password: str = "") -> None:
        if not _IDENT.match(database):
            raise ValueError(f"invalid ClickHouse database name {database!r}")
        self.url = url
        self.database = database
        self._user, self._password = user, password
        self._client: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouseUsageStore:
        return cls(
            settings.clickhouse_url, settings.clickhouse_database,
            user=settings.clickhouse_user, password=settings.clickhouse_password.get_secret_value(),
        )

    # -- synchronous core (runs on the store's thread) --------------------------------
    def _connect(self) -> Any:
        if self._client is None:
            import clickhouse_connect

            if self.url.startswith("chdb:"):
                self._client = clickhouse_connect.get_client(dsn=self.url)
            else:
                self._client = clickhouse_connect.get_client(
                    dsn=self.url, username=self._user, password=self._password
                )
        return self._client

    def _migrate(self) -> list[str]:
        client = self._connect()
        db = self.database
        client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {r[0] for r in client.query(f"SELECT version FROM {db}.schema_migrations FINAL").result_rows}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            for statement in (s.strip() for s in sql.format(database=db).split(";")):
                if statement and not all(line.strip().startswith("--") for line in statement.splitlines()):
                    client.command(statement)
            client.insert(f"{db}.schema_migrations", [[version, name]], column_names=["version", "name"])
            applied.append(name)
        return applied

    def _insert(self, rows: Sequence[StoredUsage]) -> None:
        if rows:
            self._connect().insert(
                f"{self.database}.llm_usage", [_row(r) for r in rows], column_names=list(USAGE_COLUMNS)
            )

    def _query(self, sql: str, parameters: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._connect().query(sql, parameters=parameters or {}).result_rows]

    # -- async surface ----------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run at every start and from several processes."""
        return await self._run(self._migrate)

    async def insert(self, rows: Sequence[StoredUsage]) -> None:
        await self._run(self._insert, rows)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return await self._run(self._query, sql, parameters)

    def query_sync(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """For the CLI: same thread discipline, no event loop needed."""
        return self._executor.submit(self._query, sql, parameters).result()

    def migrate_sync(self) -> list[str]:
        return self._executor.submit(self._migrate).result()

    def close(self) -> None:
        def _close() -> None:
            if self._client is not None:
                self._client.close()
                self._client = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
