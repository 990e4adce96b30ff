"""Connecting Kafka clients: producer, consumer and admin construction whose start errors say why.

aiokafka only logs what went wrong while it bootstraps and then raises a bare "Unable to
bootstrap"; the clients made here capture those logged errors and raise a ``KafkaConnectError``
naming the cause (wrong credentials, untrusted or mismatched certificate, no broker listening),
so an operator reads what to fix instead of a stack trace. Never names a password.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from pipeline.settings import Settings
from pipeline.transport.connect_errors import ConnectCause, KafkaConnectError
from pipeline.transport.kafka_security import KafkaTarget, kafka_client_options, target_options


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
    admin = AIOKafkaAdminClient(**{"client_id": "llm-pipeline-admin", **target_options(kafka), **options})
    try:
        await start_explained(admin.start, KafkaAccess.of(kafka))
        yield admin
    finally:
        await admin.close()
