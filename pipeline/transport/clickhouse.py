"""ClickHouse edge: usage rows in, report queries out, through clickhouse-connect only.

The same DDL and SQL run on the embedded engine (`chdb:///path`) and on a server
(`http(s)://host:8123`). Calls are synchronous in clickhouse-connect, so the async
wrappers run them on one dedicated thread (chDB wants a single engine user at a time).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

from pipeline.contracts.models import UsageEvent
from pipeline.settings import Settings
from pipeline.transport.clickhouse_ddl import migrations, sql_statements
from pipeline.transport.embedded_engine import capture_native_stderr, held_by_another_process, pass_on
from pipeline.urls import mask_url, redact, split_credentials

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

USAGE_COLUMNS = (
    "event_id", "request_id", "attempt", "ts", "tenant", "task_type", "requested_model", "model", "provider",
    "deployment", "status", "error_code", "http_status", "is_fallback", "is_final", "route_skipped",
    "budget_downgrade", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "total_tokens",
    "cost_usd", "latency_ms", "ttft_ms", "attributes", "kafka_topic", "kafka_partition", "kafka_offset",
    "kind", "streamed", "cache_hit", "tokens_estimated", "shared_cache_hit",
    "cache_write_tokens", "audio_input_tokens", "audio_output_tokens", "image_input_tokens",
)



@dataclass(frozen=True, slots=True)

class StoredUsage:
    """A usage event with where it was read from (for exactly-once bookkeeping)."""

    event: UsageEvent
    kafka_partition: int
    kafka_offset: int
    kafka_topic: str = ""


@dataclass(frozen=True, slots=True)
class TenantSpend:
    """Recorded spend of one tenant and task type: today and this calendar month (UTC)."""

    tenant: str
    task_type: str
    today_usd: float
    month_usd: float


class UsageStore(Protocol):
    database: str

    async def insert(self, rows: Sequence[StoredUsage], *, dedup_token: str | None = None) -> None: ...
    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        """`{partition: highest offset stored}` of the usage rows read from `topic`."""
        ...

    async def spend_this_month(self, now: datetime) -> list[TenantSpend]:
        """Recorded spend per tenant and task type in `now`'s month, and on `now`'s day."""
        ...


STORED_OFFSETS = """
SELECT kafka_partition, max(kafka_offset) FROM {db}.llm_usage
WHERE kafka_topic = %(topic)s GROUP BY kafka_partition
"""

SPEND_THIS_MONTH = """
SELECT tenant, task_type,
       sumIf(cost_usd, toDate(ts) = toDate(%(now)s)) AS today,
       sum(cost_usd) AS month
FROM {db}.llm_usage FINAL
WHERE toStartOfMonth(ts) = toStartOfMonth(toDateTime64(%(now)s, 3, 'UTC'))
GROUP BY tenant, task_type
"""


def _row(item: StoredUsage) -> list[Any]:
    e = item.event
    return [
        e.event_id, e.request_id, e.attempt, e.ts, e.tenant, e.task_type, e.requested_model, e.model, e.provider,
        e.deployment, e.status.value, e.error_code.value if e.error_code else "", e.http_status, e.is_fallback,
        e.is_final, e.route_skipped, e.budget_downgrade, e.prompt_tokens, e.completion_tokens, e.cached_tokens,
        e.reasoning_tokens, e.total_tokens, Decimal(repr(e.cost_usd)).quantize(Decimal("1e-9")), e.latency_ms,
        e.ttft_ms, e.attributes, item.kafka_topic, item.kafka_partition, item.kafka_offset,
        e.kind.value, e.streamed, e.cache_hit, e.tokens_estimated, e.shared_cache_hit,
        e.cache_write_tokens, e.audio_input_tokens, e.audio_output_tokens, e.image_input_tokens,
    ]



@dataclass(frozen=True, slots=True)
class ServerTarget:
    """Where and as whom a ClickHouse server is reached; `url` carries no credentials."""

    url: str
    interface: str
    username: str
    password: str = field(default="", repr=False)


def server_target(url: str, user: str = "default", password: str = "") -> ServerTarget:
    """`http(s)://[user[:password]@]host[:port][?options]` and CLICKHOUSE_USER/PASSWORD: the URL's
    credentials win (percent-decoded), the separate settings fill in what it leaves out. https
    defaults to port 8443, http to 8123."""
    creds = split_credentials(url.strip())
    scheme = urlsplit(creds.url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"CLICKHOUSE_URL must be chdb://, http:// or https://, got {scheme or 'no'} scheme")
    return ServerTarget(creds.url, scheme, creds.username or user or "default",
                        creds.password if creds.password is not None else password)


class EmbeddedEngineBusy(RuntimeError):
    """Another process kept the embedded engine's data directory for longer than we wait."""


class ClickHouseUnavailable(ConnectionError):
    """The server could not be reached or refused us; the message never holds the password."""


class ClickHouseUsageStore:
    """Usage rows and reports in one ClickHouse database (embedded or server)."""

    def __init__(
        self, url: str, database: str, *, user: str = "default", password: str = "", lock_wait_s: float = 30.0,
        retention_days: int | None = None, embedded_hold_s: float = 0.0,
    ) -> None:
        if not _IDENT.match(database):
            raise ValueError(f"invalid ClickHouse database name {database!r}")
        self.embedded = url.startswith("chdb:")
        self._target = None if self.embedded else server_target(url, user, password)
        self.url = url if self._target is None else mask_url(url)  # printable: the password masked
        self.database = database
        self._lock_wait_s = lock_wait_s
        self._hold_s = embedded_hold_s
        self._opened_at = 0.0
        self._release_timer: asyncio.TimerHandle | None = None
        self._retention_days = retention_days
        self._client: Any = None
        self._migrated = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouseUsageStore:
        return cls(
            settings.clickhouse_url, settings.clickhouse_database,
            user=settings.clickhouse_user, password=settings.clickhouse_password.get_secret_value(),
            retention_days=settings.usage_retention_days, embedded_hold_s=settings.clickhouse_embedded_hold_s,
        )

    # -- synchronous core (runs on the store's thread) --------------------------------
    def _connect(self) -> Any:
        """Open the client. The embedded engine admits one process per data directory: another
        process (a worker's sink, `pipeline report`) may hold it for a moment, so wait for it."""
        if self._client is not None:
            return self._client
        import clickhouse_connect

        if self._target is not None:
            t = self._target  # credentials go as headers, never in the URL clickhouse-connect sees
            try:
                self._client = clickhouse_connect.get_client(dsn=t.url, interface=t.interface, username=t.username,
                                                             password=t.password)
            except Exception as exc:
                raise ClickHouseUnavailable(redact(f"{type(exc).__name__}: {exc}", (t.password,))) from None
            return self._client
        deadline = time.monotonic() + self._lock_wait_s
        while True:
            with capture_native_stderr() as engine_output:
                try:
                    self._client = clickhouse_connect.get_client(dsn=self.url)
                except Exception as exc:
                    failure: Exception | None = exc
                else:
                    failure = None
            if failure is None:
                self._opened_at = time.monotonic()
                pass_on(engine_output.text)
                return self._client
            if not held_by_another_process(failure, engine_output.text):
                pass_on(engine_output.text)
                raise failure
            if time.monotonic() > deadline:
                raise EmbeddedEngineBusy(
                    f"the embedded ClickHouse engine at {self.url} is held by another process "
                    f"(waited {self._lock_wait_s:g} s): stop it, or point CLICKHOUSE_URL at a ClickHouse server"
                ) from None
            time.sleep(0.1)

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """The embedded engine is held for at most `embedded_hold_s` (0: only for the operation),
        so other processes can use the same directory in between (reports while a worker runs):
        opening it costs more CPU than a small insert, so a busy sink keeps it across a few
        flushes. A server connection is kept."""
        client = self._connect()
        try:
            yield client
        finally:
            if self.embedded and time.monotonic() - self._opened_at >= self._hold_s:
                self._release()

    def _release(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _migrate(self) -> list[str]:
        with self._session() as client:
            applied = self._migrate_with(client)
        self._migrated = True
        return applied

    def _migrate_with(self, client: Any) -> list[str]:
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
            for statement in sql_statements(sql.format(database=db)):
                client.command(statement)
            client.insert(f"{db}.schema_migrations", [[version, name]], column_names=["version", "name"])
            applied.append(name)
        if self._retention_days is not None:  # a setting, not a migration: it may change between starts
            client.command(
                f"ALTER TABLE {db}.llm_usage MODIFY TTL toDateTime(ts) + INTERVAL {int(self._retention_days)} DAY"
            )
        return applied

    def _insert(self, rows: Sequence[StoredUsage], dedup_token: str | None) -> None:
        if not rows:
            return
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        if not self._migrated:  # ClickHouse was unreachable at start-up: create the schema now
            self._migrate()
        with self._session() as client:
            client.insert(f"{self.database}.llm_usage", [_row(r) for r in rows], column_names=list(USAGE_COLUMNS),
                          settings=settings)

    def _query(self, sql: str, parameters: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        with self._session() as client:
            return [tuple(r) for r in client.query(sql, parameters=parameters or {}).result_rows]

    # -- async surface ----------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, fn, *args)
        if self.embedded and self._client is not None and self._release_timer is None:
            self._release_timer = loop.call_later(self._hold_s, self._release_later, loop)
        return result

    def _release_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """An idle sink lets go of the embedded engine once its hold time is up."""
        self._release_timer = None
        loop.run_in_executor(self._executor, self._release)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run at every start and from several processes."""
        return await self._run(self._migrate)

    async def insert(self, rows: Sequence[StoredUsage], *, dedup_token: str | None = None) -> None:
        """One synchronous insert. A retry with the same `dedup_token` is dropped by ClickHouse."""
        await self._run(self._insert, rows, dedup_token)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return await self._run(self._query, sql, parameters)

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        rows = await self.query(STORED_OFFSETS.replace("{db}", self.database), {"topic": topic})
        return {int(partition): int(offset) for partition, offset in rows}

    async def spend_this_month(self, now: datetime) -> list[TenantSpend]:
        naive_utc = now.astimezone(UTC).replace(tzinfo=None)
        rows = await self.query(SPEND_THIS_MONTH.replace("{db}", self.database), {"now": naive_utc})
        return [TenantSpend(str(tenant), str(task_type), float(today), float(month))
                for tenant, task_type, today, month in rows]

    def query_sync(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """For the CLI: same thread discipline, no event loop needed."""
        return self._executor.submit(self._query, sql, parameters).result()

    def migrate_sync(self) -> list[str]:
        return self._executor.submit(self._migrate).result()

    def close(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        self._executor.submit(self._release).result()
        self._executor.shutdown(wait=True)
