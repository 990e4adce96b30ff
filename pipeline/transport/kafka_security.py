"""Kafka security: the settings turned into the client options every Kafka client of the pipeline shares.

One place maps KAFKA_SECURITY_PROTOCOL, the TLS files and the SASL credentials to aiokafka's
keyword arguments (producer, consumer, admin) and to FastStream's security object, so the worker,
the usage sink, topic creation, ``pipeline check`` and the Python client all connect alike. The
options hold the SASL password: never log them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from pipeline.settings import Settings

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


def target_options(kafka: KafkaTarget) -> dict[str, Any]:
    """The aiokafka options a target stands for: built from the settings, or given as they are."""
    return kafka_client_options(kafka) if isinstance(kafka, Settings) else dict(kafka)
