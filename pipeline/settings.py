"""All runtime settings in one place, each overridable from the environment.

Most variables carry the `PIPELINE_` prefix; the few that operators already know by
another name (`KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_URL`, `REDIS_URL`) are read as-is.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "llm-pipeline"


def _default_clickhouse_url() -> str:
    return f"chdb://{_default_data_dir() / 'chdb'}"


def _env(name: str) -> AliasChoices:
    """Accept both the bare operator-facing name and the prefixed one."""
    return AliasChoices(name, f"PIPELINE_{name}")


class Settings(BaseSettings):
    """Worker, sink and CLI settings. Construct with keywords in code, env vars in deployment."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", populate_by_name=True, frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    kafka_client_id: str = "llm-pipeline"
    kafka_fetch_max_wait_ms: int = Field(
        500, description="Lower it (e.g. 5) against brokers that hold fetches until the wait expires."
    )
    kafka_idempotent_producer: bool = Field(
        True, description="enable_idempotence on producers; the embedded demo broker lacks InitProducerId."
    )
    kafka_max_poll_interval_ms: int = 300_000
    kafka_session_timeout_ms: int = 10_000
    consumer_group: str = "llm-pipeline-workers"
    usage_consumer_group: str = "llm-pipeline-usage-sink"
    topic_requests: str = "llm.requests"
    topic_replies: str = "llm.replies"
    topic_usage: str = "llm.usage"
    topic_dlq: str = "llm.requests.dlq"
    topic_usage_dlq: str = "llm.usage.dlq"
    topic_alerts: str = "llm.alerts"
    allowed_reply_topics: str = Field(
        "llm.replies*", description="Comma-separated glob patterns a request's reply_to must match."
    )
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    topic_partitions: int = 4
    max_message_bytes: int = Field(1024 * 1024, gt=0, description="Larger requests go to the DLQ as too_large.")
    kafka_max_record_bytes: int | None = Field(
        None, gt=0, description="Largest record the worker writes (producer max_request_size, and max.message.bytes "
        "of the topics it creates). Unset: 8 MiB or 2 x max_message_bytes + 64 KiB, whichever is larger, so a "
        "too-large request still fits its dead letter.",
    )
    max_in_flight: int = Field(256, ge=1, description="Requests processed at once by one worker.")
    partition_window: int = Field(128, ge=1, description="In-flight requests per partition before it is paused.")
    commit_every: int = Field(100, ge=1, description="Commit after this many completions...")
    commit_interval_s: float = Field(1.0, gt=0, description="...or after this many seconds.")
    ordered_by_key: bool = Field(False, description="Process records with the same Kafka key in order.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="On revoke/stop: how long in-flight work may finish.")
    poison_max_attempts: int = Field(3, ge=1, description="Tries of a request whose handling raises before DLQ.")
    poison_backoff_s: float = Field(0.5, ge=0)
    rate_limit_wait_max_s: float = Field(
        30.0, ge=0, description="When every candidate is rate-limited, wait (holding intake) at most this long."
    )
    idempotency_lease_s: float = Field(15.0, gt=0, description="Lease on a request id while it is processed.")
    idempotency_ttl_s: float = Field(86400.0, gt=0, description="How long a published reply is kept for redeliveries.")
    idempotency_max_entries: int = Field(100_000, ge=1, description="In-process store size (no REDIS_URL).")

    # ClickHouse
    clickhouse_url: str = Field(default_factory=_default_clickhouse_url, validation_alias=_env("CLICKHOUSE_URL"))
    clickhouse_database: str = Field("llm", validation_alias=_env("CLICKHOUSE_DATABASE"))
    clickhouse_user: str = Field("default", validation_alias=_env("CLICKHOUSE_USER"))
    clickhouse_password: SecretStr = Field(SecretStr(""), validation_alias=_env("CLICKHOUSE_PASSWORD"))
    clickhouse_embedded_hold_s: float = Field(
        5.0, ge=0, description="chDB only: keep the engine open this long across inserts (other processes "
        "wait up to this long for it); 0 releases it after every operation.",
    )
    usage_retention_days: int = Field(400, ge=1, description="Usage rows older than this are dropped (TTL).")
    usage_batch_size: int = 5000
    usage_flush_interval_s: float = 2.0

    # Shared state (later issues); None means in-process state for a single worker.
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    redis_namespace: str = Field("llm-pipeline", description="Key prefix, so several pipelines can share a Redis.")

    log_level: str = "INFO"
    log_format: str = Field("json", description="json (one object per line) or text.")
    tracing: bool = Field(False, description="OpenTelemetry spans (needs the `tracing` extra).")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Worker event loop; auto = uvloop when installed (less CPU per request)."
    )
    http_host: str = "0.0.0.0"
    http_port: int | None = Field(9464, description="/metrics, /healthz, /readyz; 0 picks a free port, unset disables.")

    # Configuration files and providers
    config_dir: Path = Field(Path("config"), validation_alias=_env("CONFIG_DIR"))
    config_reload_interval_s: float = Field(
        2.0, ge=0, description="How often the config files are checked for changes (0: only on SIGHUP)."
    )
    provider_timeout_s: float = Field(60.0, description="Per-attempt timeout of one provider call.")
    response_cache: Literal["off", "memory", "redis"] = Field(
        "off", description="Exact-match answers: off, memory (this worker) or redis (the fleet, REDIS_URL)."
    )
    response_cache_ttl_s: float = Field(3600.0, gt=0, description="How long a cached answer is served.")
    response_cache_max_entries: int = Field(10_000, ge=1, description="memory cache: entries kept (LRU).")
    estimate_completion_tokens: int = Field(
        512, ge=1, description="Completion tokens assumed for cost estimates when a request sets no max_tokens."
    )

    @model_validator(mode="after")
    def _records_fit_their_dead_letters(self) -> Settings:
        if self.kafka_max_record_bytes is not None and self.kafka_max_record_bytes < self.max_message_bytes:
            raise ValueError(
                f"PIPELINE_KAFKA_MAX_RECORD_BYTES ({self.kafka_max_record_bytes}) is below PIPELINE_MAX_MESSAGE_BYTES "
                f"({self.max_message_bytes}): a valid request could not be dead-lettered with its bytes"
            )
        return self

    @property
    def record_limit_bytes(self) -> int:
        """What one record the worker writes may weigh, value and headers together."""
        if self.kafka_max_record_bytes is not None:
            return self.kafka_max_record_bytes
        return max(8 * 1024 * 1024, 2 * self.max_message_bytes + 64 * 1024)

    def reply_topic_allowed(self, topic: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, p.strip()) for p in self.allowed_reply_topics.split(",") if p.strip())
