"""Kafka security settings: read from the environment, checked together, turned into client options,
and never printed. Connect failures explained from the exceptions aiokafka logs. No broker needed."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram512
from pydantic import ValidationError

from pipeline.settings import Settings
from pipeline.transport.kafka import (
    KafkaAccess,
    explain_connect_failure,
    kafka_client_options,
    kafka_security,
)

SECRET = "kafka-pw-LEAKCHECK-93e1"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A CA certificate file (the system bundle's first certificate: any valid PEM will do)."""
    bundle = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    pem = bundle.read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    path = tmp_path / "ca.pem"
    path.write_text(first[first.index("-----BEGIN CERTIFICATE-----"):] + "\n")
    return path


def sasl_ssl(**extra: object) -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="worker", kafka_sasl_password=SECRET, **extra)  # type: ignore[arg-type]


def test_both_env_names_are_read_and_names_are_case_insensitive(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_MECHANISM", "plain")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "app")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "")
    s = Settings()
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism, s.kafka_sasl_username) == ("SASL_PLAINTEXT", "PLAIN",
                                                                                           "app")
    assert s.kafka_ssl_endpoint_identification_algorithm == "none" and not s.kafka_ssl_check_hostname
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_the_defaults_are_plaintext_with_hostname_checking() -> None:
    s = Settings()
    assert s.kafka_security_protocol == "PLAINTEXT" and s.kafka_ssl_check_hostname
    assert kafka_client_options(s) == {"bootstrap_servers": s.kafka_bootstrap_servers,
                                       "security_protocol": "PLAINTEXT"}
    assert kafka_security(s) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"}, "needs KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u"},
     "needs KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "TLS"}, "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    ({"kafka_sasl_mechanism": "OAUTHBEARER"}, "KAFKA_SASL_MECHANISM=OAUTHBEARER is not supported"),
    ({"kafka_sasl_mechanism": "MD5"}, "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"kafka_sasl_password": SECRET}, "KAFKA_SASL_PASSWORD set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certificate_location": "CA"}, "go together"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_key_password": SECRET}, "KAFKA_SSL_KEY_PASSWORD set without"),
    ({"kafka_ssl_ca_location": "CA"}, "KAFKA_SSL_CA_LOCATION set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_location": "/nowhere/ca.pem"},
     "no such file: KAFKA_SSL_CA_LOCATION=/nowhere/ca.pem"),
])
def test_combinations_are_checked_with_clear_errors(kwargs: dict, message: str, ca_file: Path) -> None:
    kwargs = {k: (str(ca_file) if v == "CA" else v) for k, v in kwargs.items()}
    with pytest.raises(ValidationError) as caught:
        Settings(**kwargs)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_sasl_ssl_becomes_aiokafka_options_and_a_faststream_security(ca_file: Path) -> None:
    s = sasl_ssl(kafka_ssl_ca_location=ca_file)
    options = kafka_client_options(s)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("worker", SECRET)
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname
    security = kafka_security(s)
    assert isinstance(security, SASLScram512) and security.use_ssl and security.ssl_context is not None
    plain = kafka_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                                    kafka_sasl_username="u", kafka_sasl_password=SECRET))
    assert isinstance(plain, SASLPlaintext) and not plain.use_ssl
    tls = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=ca_file,
                   kafka_ssl_endpoint_identification_algorithm="none")
    only_tls = kafka_security(tls)
    assert type(only_tls) is BaseSecurity and only_tls.use_ssl
    assert not kafka_client_options(tls)["ssl_context"].check_hostname


def test_connect_failures_are_explained_without_the_password(ca_file: Path) -> None:
    s = sasl_ssl(kafka_ssl_ca_location=ca_file)
    access = KafkaAccess.of(s)
    bootstrap = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9093, <AddressFamily.AF_INET: 2>)]")
    auth = explain_connect_failure(access, [SaslAuthenticationFailed("invalid credentials")], bootstrap)
    assert auth.cause == "authentication"
    assert "authentication failed for user 'worker' (SASL SCRAM-SHA-512)" in str(auth)
    assert "KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD" in str(auth) and SECRET not in str(auth)

    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 19, "self-signed certificate in certificate chain"
    tls = explain_connect_failure(access, [untrusted], bootstrap)
    assert tls.cause == "tls_untrusted"
    assert f"the broker's certificate is not trusted by KAFKA_SSL_CA_LOCATION={ca_file}" in str(tls)

    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 64, "IP address mismatch, certificate is not valid for '10.0.0.1'."
    assert explain_connect_failure(access, [mismatch], bootstrap).cause == "tls_hostname"

    refused = explain_connect_failure(access, [ConnectionRefusedError(111, "Connect call failed")], bootstrap)
    assert refused.cause == "unreachable" and "no Kafka broker answers" in str(refused)
    unknown = explain_connect_failure(access, [], bootstrap)
    assert unknown.cause == "unknown" and "Unable to bootstrap" in str(unknown)
