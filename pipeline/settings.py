"""All runtime settings in one place, each overridable from the environment.

Most variables carry the `PIPELINE_` prefix; the few that operators already know by
another name (`KAFKA_BOOTSTRAP_SERVERS`, `CLICKHOUSE_URL`, `REDIS_URL`) are read as-is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.reply_topics import ReplyTopicPolicy, parse_patterns


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "llm-pipeline"


def _default_clickhouse_url() -> str:
    return f"chdb://{_default_data_dir() / 'chdb'}"


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def kafka_security_problem(s: Settings) -> str | None:
    """What is wrong with the Kafka security settings taken together (None: nothing). Never quotes a password."""
    sasl = s.kafka_security_protocol.startswith("SASL_")
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    proto = f"KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if sasl and s.kafka_sasl_mechanism is None:
        return f"{proto} needs KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
    if sasl and not s.kafka_sasl_username:
        return f"{proto} needs KAFKA_SASL_USERNAME"
    if sasl and s.kafka_sasl_password is None:
        return f"{proto} needs KAFKA_SASL_PASSWORD"
    given = {"KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism, "KAFKA_SASL_USERNAME": s.kafka_sasl_username,
             "KAFKA_SASL_PASSWORD": s.kafka_sasl_password}
    if not sasl and (unused := [name for name, value in given.items() if value is not None]):
        return f"{', '.join(unused)} set but {proto} does not authenticate: use SASL_SSL (or SASL_PLAINTEXT)"
    files = {"KAFKA_SSL_CA_LOCATION": s.kafka_ssl_ca_location,
             "KAFKA_SSL_CERTIFICATE_LOCATION": s.kafka_ssl_certificate_location,
             "KAFKA_SSL_KEY_LOCATION": s.kafka_ssl_key_location}
    if not tls and (unused := [n for n, v in {**files, "KAFKA_SSL_KEY_PASSWORD": s.kafka_ssl_key_password}.items()
                               if v is not None]):
        return f"{', '.join(unused)} set but {proto} does not use TLS: use SSL or SASL_SSL"
    if (s.kafka_ssl_certificate_location is None) != (s.kafka_ssl_key_location is None):
        return "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (client certificate and its key)"
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_key_location is None:
        return "KAFKA_SSL_KEY_PASSWORD set without KAFKA_SSL_KEY_LOCATION"
    missing = [f"{name}={path}" for name, path in files.items() if path is not None and not Path(path).is_file()]
    return f"no such file: {', '.join(missing)}" if missing else None


def _env(name: str) -> AliasChoices:
    """Accept both the bare operator-facing name and the prefixed one."""
    return AliasChoices(name, f"PIPELINE_{name}")


class Settings(BaseSettings):
    """Worker, sink and CLI settings. Construct with keywords in code, env vars in deployment."""

    # hide_input_in_errors: a validation error would otherwise print every input, passwords included.
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", populate_by_name=True, frozen=True, extra="ignore",
                                      hide_input_in_errors=True)

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
    # Kafka security (docs/security.md): named after the client properties (security.protocol, sasl.mechanism,
    # ssl.ca.location, ...), read as KAFKA_<NAME> or PIPELINE_KAFKA_<NAME>; checked together by _kafka_security.
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL"),
        description="security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None, validation_alias=_env("KAFKA_SASL_MECHANISM"),
        description="sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols only).",
    )
    kafka_sasl_username: str | None = Field(None, validation_alias=_env("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias=_env("KAFKA_SASL_PASSWORD"))
    kafka_ssl_ca_location: Path | None = Field(
        None, validation_alias=_env("KAFKA_SSL_CA_LOCATION"),
        description="ssl.ca.location: PEM CA bundle the broker's certificate must chain to (unset: system CAs).",
    )
    kafka_ssl_certificate_location: Path | None = Field(
        None, validation_alias=_env("KAFKA_SSL_CERTIFICATE_LOCATION"),
        description="ssl.certificate.location: PEM client certificate (mTLS); needs KAFKA_SSL_KEY_LOCATION.",
    )
    kafka_ssl_key_location: Path | None = Field(
        None, validation_alias=_env("KAFKA_SSL_KEY_LOCATION"), description="ssl.key.location: its PEM private key.",
    )
    kafka_ssl_key_password: SecretStr | None = Field(None, validation_alias=_env("KAFKA_SSL_KEY_PASSWORD"))
    kafka_ssl_endpoint_identification_algorithm: Literal["https", "none"] = Field(
        "https", validation_alias=_env("KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"),
        description="https: the broker's certificate must name the host connected to; none turns that off.",
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _kafka_names_upper(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if value in ("OAUTHBEARER", "GSSAPI"):
                raise ValueError(
                    f"KAFKA_SASL_MECHANISM={value} is not supported: the pipeline's Kafka client (aiokafka) needs "
                    "code for it (a token provider / Kerberos); use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )
            return value or None
        return value

    @field_validator("kafka_ssl_endpoint_identification_algorithm", mode="before")
    @classmethod
    def _kafka_hostname_check(cls, value: object) -> object:
        return "none" if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def kafka_ssl_check_hostname(self) -> bool:
        return self.kafka_ssl_endpoint_identification_algorithm == "https"
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
        "{replies}.{tenant},{replies}.{tenant}.*",
        description="Comma-separated patterns a request's reply_to must match (docs/security.md). "
        "{replies} is topic_replies; {tenant} the request's tenant, only when it is one topic segment "
        "([A-Za-z0-9_-]+), else that pattern matches nothing. 'P' matches P exactly, 'P.*' P's sub-topics, "
        "'P*' P and its sub-topics: a trailing * never matches across a missing '.' separator (llm.replies* "
        "never matches llm.repliesX); * elsewhere is invalid. topic_replies itself is always allowed; the "
        "worker's own topics (requests, usage, usage dlq, dlq, alerts) never are, whatever the patterns say.",
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
    clickhouse_url: str = Field(default_factory=_default_clickhouse_url, validation_alias=_env("CLICKHOUSE_URL"),
                                repr=False)  # may hold a password
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
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"), repr=False)  # may hold a password
    redis_namespace: str = Field("llm-pipeline", description="Key prefix, so several pipelines can share a Redis.")

    # Secrets and credentials (docs/security.md): references resolved at call time, never printed.
    secrets_dir: Path | None = Field(
        None, description="One file per secret (a mounted Kubernetes/Docker secret): {name} in models.yaml's api_key."
    )
    secrets_file: Path | None = Field(
        None, description="A YAML or JSON mapping name: value, read for {name} after secrets_dir."
    )
    redis_password: SecretStr | None = Field(
        None, description="Redis AUTH password when REDIS_URL carries none (redis://user@host or redis://host)."
    )
    redis_tls_ca_file: Path | None = Field(
        None, description="CA bundle that signed the Redis server's certificate (rediss:// URLs only)."
    )

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
    litellm_config: Path | None = Field(
        None, description="A LiteLLM Proxy config.yaml to take the models from instead of config_dir's "
                          "models.yaml (routing.yaml and templates.yaml there still apply). A config_dir with "
                          "config.yaml and no models.yaml is read the same way. Unsupported keys are "
                          "reported by name at start-up.")
    config_reload_interval_s: float = Field(
        2.0, ge=0, description="How often the config files are checked for changes (0: only on SIGHUP)."
    )
    provider_timeout_s: float = Field(60.0, description="Per-attempt timeout of one provider call.")
    response_cache: Literal["off", "memory", "redis"] = Field(
        "off", description="Exact-match answers: off, memory (this worker) or redis (the fleet, REDIS_URL)."
    )
    response_cache_ttl_s: float = Field(3600.0, gt=0, description="How long a cached answer is served.")
    response_cache_max_entries: int = Field(10_000, ge=1, description="memory cache: entries kept (LRU).")
    response_cache_scope: Literal["tenant", "shared"] = Field(
        "tenant", description="tenant: an answer is served only to the tenant whose call produced it. shared: "
        "to every tenant; a hit on another tenant's answer is booked to the tenant served at what the call "
        "would have cost, flagged shared_cache_hit in its usage row.",
    )
    estimate_completion_tokens: int = Field(
        512, ge=1, description="Completion tokens assumed for cost estimates when a request sets no max_tokens."
    )

    # Tenant authentication (docs/security.md, pipeline/stages/authenticate.py): who may act for which tenant.
    tenant_auth: Literal["field", "signature", "topic"] = Field(
        "field", description="field: the request's tenant field as written (one trusted team: any producer can act "
        "for any tenant). signature: the tenant field, authenticated by an HMAC-SHA256 in the x-pipeline-signature "
        "header with the tenant's key (tenant_keys_dir). topic: the tenant is taken from the request topic "
        "(tenant_topic_pattern); Kafka ACLs decide who may write each tenant's topic.",
    )
    tenant_keys_dir: Path | None = Field(
        None, description="signature mode: one file per tenant, named after it (a mounted Kubernetes secret), "
        "holding its signing key (one key per line: all are accepted, for rotation); read at verification time.",
    )
    tenant_keys_cache_s: float = Field(
        5.0, ge=0, description="signature mode: how long a key file read is reused (0: read every time).",
    )
    tenant_topic_pattern: str = Field(
        "llm.requests.tenant.{tenant}", description="topic mode: the request topic of each tenant; the worker "
        "subscribes to every topic the pattern matches ({tenant}: one segment, [A-Za-z0-9_-]+).",
    )
    tenant_signing_key: SecretStr | None = Field(
        None, description="PipelineClient: sign published requests with this key (signature mode).",
    )
    kafka_metadata_max_age_ms: int = Field(
        300_000, gt=0, description="How often consumers refresh topic metadata: in topic mode, how soon a new "
        "tenant topic is consumed.",
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

    @model_validator(mode="after")
    def _reply_topic_patterns_are_valid(self) -> Settings:
        parse_patterns(self.allowed_reply_topics)
        return self

    @property
    def reply_topic_policy(self) -> ReplyTopicPolicy:
        """`allowed_reply_topics` for this worker: its default reply topic, and the topics it never replies to."""
        own = (self.topic_requests, self.topic_usage, self.topic_usage_dlq, self.topic_dlq, self.topic_alerts)
        return ReplyTopicPolicy.of(self.allowed_reply_topics, self.topic_replies, own,
                                   own_patterns=(self.tenant_topic_pattern,))  # per-tenant request topics

    def reply_topic_allowed(self, topic: str, tenant: str | None = "default") -> bool:
        """Whether a request of `tenant` may direct its reply to `topic` (None: a tenant not known)."""
        return self.reply_topic_policy.allows(topic, tenant)
