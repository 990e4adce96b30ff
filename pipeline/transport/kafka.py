"""Kafka edge: the FastStream broker, the Publisher it backs, topic creation, and the security
options (TLS, SASL) and connect-error explanations every Kafka client of the pipeline shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedForMessageFormatError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from pipeline.settings import Settings
from pipeline.transport.connect_errors import ConnectCause, KafkaConnectError
from pipeline.transport.records import PublishRefused

log = logging.getLogger(__name__)

# -- security: settings -> client options ------------------------------------------------------------

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_SECURITY: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512,
}


def _no_key_password() -> str:
    """Given to OpenSSL for an encrypted key when KAFKA_SSL_KEY_PASSWORD is unset: fail, never prompt."""
    return ""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL / SASL_SSL (None otherwise): KAFKA_SSL_CA_LOCATION (else the system CAs),
    the client certificate for mTLS, hostname checking unless KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none."""
    if settings.kafka_security_protocol not in _TLS_PROTOCOLS:
        return None
    ca = settings.kafka_ssl_ca_location
    context = create_ssl_context(cafile=str(ca) if ca else None)
    if settings.kafka_ssl_certificate_location is not None:
        key_password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certificate_location),
            str(settings.kafka_ssl_key_location) if settings.kafka_ssl_key_location else None,
            key_password.get_secret_value() if key_password is not None else _no_key_password,
        )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (producer, consumer, admin) for the configured cluster and security:
    bootstrap_servers, security_protocol, ssl_context and the sasl_* options. Holds the password: never log it."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings' validator makes sure
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """The same security as FastStream's object (SASLScram512 & co., BaseSecurity for SSL; None: PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_mechanism is not None and settings.kafka_sasl_password is not None
        return _SASL_SECURITY[settings.kafka_sasl_mechanism](
            settings.kafka_sasl_username or "", settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context, use_ssl=protocol == "SASL_SSL",
        )
    return BaseSecurity(context, use_ssl=True) if protocol == "SSL" else None


#: What ensure_topics / topic_partitions connect with: the settings, or aiokafka options (bootstrap_servers...).
KafkaTarget = Settings | Mapping[str, Any]


def _options_of(kafka: KafkaTarget) -> dict[str, Any]:
    return kafka_client_options(kafka) if isinstance(kafka, Settings) else dict(kafka)


# -- connect errors: aiokafka's "Unable to bootstrap" -> the cause ------------------------------------

@dataclass(frozen=True, slots=True)
class KafkaAccess:
    """What a connect error may name about how a client connects. Never a password."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    ssl_ca_location: str | None = None

    @classmethod
    def of(cls, kafka: KafkaTarget) -> KafkaAccess:
        if isinstance(kafka, Settings):
            ca = kafka.kafka_ssl_ca_location
            return cls(kafka.kafka_bootstrap_servers, kafka.kafka_security_protocol, kafka.kafka_sasl_mechanism,
                       kafka.kafka_sasl_username, str(ca) if ca else None)
        servers = kafka.get("bootstrap_servers", "localhost")
        return cls(servers if isinstance(servers, str) else ",".join(servers),
                   kafka.get("security_protocol", "PLAINTEXT"), kafka.get("sasl_mechanism"),
                   kafka.get("sasl_plain_username"))


class _LoggedFailures(logging.Handler):
    """The exceptions aiokafka logs (and does not raise) while a client bootstraps."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))


#: X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)


def _explain_tls(access: KafkaAccess, err: ssl.SSLError) -> tuple[ConnectCause, str]:
    if isinstance(err, ssl.SSLCertVerificationError):
        detail = err.verify_message or str(err)
        if err.verify_code in _NAME_MISMATCH:
            return "tls_hostname", (
                f"TLS: the broker's certificate does not name the host in KAFKA_BOOTSTRAP_SERVERS="
                f"{access.bootstrap_servers} ({detail}): connect by a name or IP its certificate holds, or "
                "(not recommended) set KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none"
            )
        trusted_by = (f"KAFKA_SSL_CA_LOCATION={access.ssl_ca_location}" if access.ssl_ca_location
                      else "the system CAs (set KAFKA_SSL_CA_LOCATION to the CA that signed it)")
        return "tls_untrusted", f"TLS: the broker's certificate is not trusted by {trusted_by} ({detail})"
    return "tls", (
        f"TLS handshake with {access.bootstrap_servers} failed ({err.reason or err}): is it a TLS listener? "
        f"(KAFKA_SECURITY_PROTOCOL={access.security_protocol})"
    )


def _explain_one(access: KafkaAccess, err: BaseException) -> tuple[ConnectCause, str] | None:
    if isinstance(err, SaslAuthenticationFailed):
        return "authentication", (
            f"authentication failed for user {access.sasl_username!r} (SASL {access.sasl_mechanism}) at "
            f"{access.bootstrap_servers}: check KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD (and that the user "
            f"exists for {access.sasl_mechanism}); broker said: {err}"
        )
    if isinstance(err, UnsupportedSaslMechanismError):
        return "mechanism", f"KAFKA_SASL_MECHANISM={access.sasl_mechanism} is not enabled on the broker: {err}"
    if isinstance(err, ssl.SSLError):
        return _explain_tls(access, err)
    if isinstance(err, ConnectionRefusedError | TimeoutError | OSError):
        return "unreachable", f"no Kafka broker answers at KAFKA_BOOTSTRAP_SERVERS={access.bootstrap_servers} ({err})"
    return None


def explain_connect_failure(access: KafkaAccess, errors: list[BaseException], exc: BaseException) -> KafkaConnectError:
    """The most telling of the logged `errors` (else `exc`) as a KafkaConnectError."""
    candidates = [*errors, exc]
    explained = [e for e in (_explain_one(access, err) for err in candidates) if e is not None]
    # Credentials and certificates say more than a refused connection to some other bootstrap host.
    explained.sort(key=lambda e: e[0] == "unreachable")
    if explained:
        cause, message = explained[0]
    else:
        details = "; ".join(dict.fromkeys(f"{type(e).__name__}: {e}" for e in candidates))
        cause, message = "unknown", (
            f"could not connect to Kafka at {access.bootstrap_servers} "
            f"(KAFKA_SECURITY_PROTOCOL={access.security_protocol}): {details}"
        )
    return KafkaConnectError(message, cause, access.bootstrap_servers)


_CONNECT_FAILURES = (KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError, ssl.SSLError)


async def start_explained(start: Callable[[], Awaitable[Any]], access: KafkaAccess) -> None:
    """Run a client's `start`; a failure to connect becomes a KafkaConnectError naming the cause."""
    captured = _LoggedFailures()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(captured)
    try:
        await start()
    except _CONNECT_FAILURES as exc:
        raise explain_connect_failure(access, captured.errors, exc) from exc
    finally:
        aiokafka_log.removeHandler(captured)


class _ExplainedStart:
    """A failed `start()` raises KafkaConnectError naming the cause, and closes what it opened."""

    _access: KafkaAccess

    async def start(self) -> None:
        try:
            await start_explained(super().start, self._access)  # type: ignore[misc]
        except KafkaConnectError:
            with contextlib.suppress(Exception):
                await self.stop()  # type: ignore[attr-defined]
            raise


class _ExplainingConsumer(_ExplainedStart, AIOKafkaConsumer):
    def __init__(self, *topics: str, access: KafkaAccess, **options: Any) -> None:
        super().__init__(*topics, **options)
        self._access = access


class _ExplainingProducer(_ExplainedStart, AIOKafkaProducer):
    def __init__(self, *, access: KafkaAccess, **options: Any) -> None:
        super().__init__(**options)
        self._access = access


def kafka_consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer on the configured cluster and security (`options` add to or override them)."""
    return _ExplainingConsumer(*topics, access=KafkaAccess.of(settings), **{**kafka_client_options(settings),
                                                                             **options})


def kafka_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An aiokafka producer on the configured cluster and security (`options` add to or override them)."""
    return _ExplainingProducer(access=KafkaAccess.of(settings), **{**kafka_client_options(settings), **options})


@contextlib.asynccontextmanager
async def kafka_admin(kafka: KafkaTarget, **options: Any) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (closed on exit); a failure to connect raises KafkaConnectError."""
    admin = AIOKafkaAdminClient(**{"client_id": "llm-pipeline-admin", **_options_of(kafka), **options})
    try:
        await start_explained(admin.start, KafkaAccess.of(kafka))
        yield admin
    finally:
        await admin.close()


def build_broker(settings: Settings, *, client_suffix: str = "") -> KafkaBroker:
    """One broker per process: an idempotent producer that waits for every in-sync replica, sized
    so that every record the worker builds (a too-large request's dead letter included) fits."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
        client_id=settings.kafka_client_id + client_suffix,
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=1,
        max_request_size=settings.record_limit_bytes,
        logger=logging.getLogger("pipeline.kafka"),
        log_level=logging.DEBUG,
    )


def build_consumer(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    """A group consumer that never auto-commits: the intake commits finished prefixes itself."""
    return kafka_consumer(
        settings,
        client_id=settings.kafka_client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 3),
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,  # new topics of a pattern subscription
    )


#: Broker and client errors that no retry can cure: the record or its topic is wrong, not the cluster.
_REFUSALS: tuple[tuple[type[KafkaError], str], ...] = (
    (MessageSizeTooLargeError, "too_large"),
    (RecordListTooLargeError, "too_large"),
    (RecordTooLargeError, "too_large"),
    (InvalidTopicError, "invalid_topic"),
    (TopicAuthorizationFailedError, "not_authorized"),
    (CorruptRecordException, "invalid_record"),
    (InvalidTimestampError, "invalid_record"),
    (UnsupportedForMessageFormatError, "invalid_record"),
    (PolicyViolationError, "invalid_record"),
)


def publish_refusal(exc: BaseException) -> str | None:
    """The refusal reason when `exc` means "this record can never be written", else None (an outage)."""
    for cls, reason in _REFUSALS:
        if isinstance(exc, cls):
            return reason
    return None


def is_kafka_outage(exc: BaseException) -> bool:
    """The cluster is unreachable, moving leaders or timing out: retry. A refusal is not an outage."""
    return isinstance(exc, KafkaError) and publish_refusal(exc) is None


class BrokerPublisher:
    """`Publisher` over FastStream; `publish` returns after the broker acknowledged the record.

    Permanent refusals (see `_REFUSALS`) become `PublishRefused`; everything else (broker down,
    leader moving, timeouts) propagates as it is and is retried by the caller.
    """

    def __init__(self, broker: KafkaBroker, settings: Settings | None = None) -> None:
        self._broker = broker
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings, *, client_suffix: str = "") -> BrokerPublisher:
        return cls(build_broker(settings, client_suffix=client_suffix), settings)

    async def start(self) -> None:
        """Connect; a failure to connect raises KafkaConnectError naming its cause."""
        if self._settings is None:
            await self._broker.start()
            return
        # FastStream drops (unclosed) a producer whose start failed: find out first, with a client we close.
        async with kafka_admin(self._settings):
            pass
        try:
            await start_explained(self._broker.start, KafkaAccess.of(self._settings))
        except KafkaConnectError:
            with contextlib.suppress(Exception):
                await self._broker.stop()
            raise

    async def stop(self) -> None:
        await self._broker.stop()

    async def ping(self, timeout: float) -> bool:
        """The broker answers within `timeout` seconds (readiness)."""
        return bool(await self._broker.ping(timeout=timeout))

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        try:
            await self._broker.publish(value, topic=topic, key=key, headers=headers)
        except KafkaError as exc:
            reason = publish_refusal(exc)
            if reason is None:
                raise
            raise PublishRefused(topic, reason, f"{type(exc).__name__}: {exc}") from exc


def pipeline_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_requests, settings.topic_replies, settings.topic_usage, settings.topic_dlq,
        settings.topic_usage_dlq, settings.topic_alerts,
    ]


async def ensure_topics(
    kafka: KafkaTarget, topics: list[str], *, partitions: int, timeout_s: float = 30,
    max_message_bytes: int | None = None,
) -> None:
    """Create missing topics and wait until every partition has a leader (idempotent).

    `kafka` is the Settings (their cluster and security) or aiokafka options with `bootstrap_servers`.
    Replication 1 suits local brokers; production clusters should create topics with their
    own tooling and run workers with PIPELINE_CREATE_TOPICS=false. Existing topics are left
    as they are, whatever their partition count. `max_message_bytes` sets the new topics'
    `max.message.bytes` (the worker passes its record limit, so what it may write, the broker takes).
    A principal without CREATE permission is refused even for a topic that exists (error 29, not 36):
    such a topic is then described instead, and only one that does not exist (or cannot be seen) fails.
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return
    async with kafka_admin(kafka, request_timeout_ms=int(timeout_s * 1000)) as admin:
        configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else None
        response = await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs) for n in names])
        refused: list[str] = []
        for topic_error in response.topic_errors:
            topic, code = topic_error[0], topic_error[1]
            if code in (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno):
                refused.append(topic)
            elif code and code != TopicAlreadyExistsError.errno:
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise for_code(code)(f"create topic {topic!r}: {message}")
        if refused:
            await _require_existing(admin, refused, KafkaAccess.of(kafka))
        # The controller answers before partitions are live; wait so the first produce or
        # assignment does not race the broker.
        await _wait_for_leaders(admin, names, timeout_s)


async def _require_existing(admin: AIOKafkaAdminClient, names: list[str], access: KafkaAccess) -> None:
    """Topics the principal may not create: fine when they exist, else an error saying what to do."""
    who = f"user {access.sasl_username!r}" if access.sasl_username else "this client"
    for described in await admin.describe_topics(names):
        topic, code = described["topic"], described["error_code"]
        if code == UnknownTopicOrPartitionError.errno:
            raise TopicAuthorizationFailedError(
                f"topic {topic!r} does not exist and {who} may not create it: create it with your tooling "
                "(then PIPELINE_CREATE_TOPICS=false) or grant CREATE on it"
            )
        if code:
            raise TopicAuthorizationFailedError(
                f"{who} may not create topic {topic!r} nor describe it (error {code}): grant DESCRIBE "
                "(and the READ or WRITE it needs) on it"
            )
        log.info("topic %s exists; %s may not create topics, so it was not created", topic, who)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if denied := [t["topic"] for t in described if t["error_code"] == TopicAuthorizationFailedError.errno]:
            raise TopicAuthorizationFailedError(f"not authorized to describe topics {denied}: grant DESCRIBE")
        pending = [
            t["topic"] for t in described
            if t["error_code"] or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described}
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics missing or without leaders after {timeout_s}s: {pending}")
        await asyncio.sleep(0.05)


async def topic_partitions(kafka: KafkaTarget, topic: str, *, timeout_s: float = 30) -> list[int]:
    """Partition ids of an existing topic, waiting (up to `timeout_s`) for it to appear.

    `kafka` as for `ensure_topics`. aiokafka consumers only learn metadata of subscribed topics;
    readers that assign partitions themselves (reply readers, tests) ask the cluster here instead.
    """
    async with kafka_admin(kafka) as admin:
        return (await _wait_for_leaders(admin, [topic], timeout_s))[topic]
