"""Vendor-free errors of reaching Kafka, raised by every client the pipeline starts.

aiokafka reports a failed start only as "Unable to bootstrap from [...]"; `KafkaConnectError`
carries the real cause (wrong credentials, an untrusted certificate, a hostname mismatch, a
refused connection) in words that name the setting to check. It never quotes a password.
"""

from __future__ import annotations

from typing import Literal

#: authentication: the broker refused the SASL credentials; mechanism: the broker does not offer it;
#: tls_untrusted / tls_hostname: the broker's certificate; tls: another TLS failure (e.g. a TLS client on a
#: plaintext listener); unreachable: nothing answered; unknown: anything else (the message quotes it).
ConnectCause = Literal["authentication", "mechanism", "tls_untrusted", "tls_hostname", "tls", "unreachable", "unknown"]


class KafkaConnectError(ConnectionError):
    """A Kafka client could not connect; `cause` says why, the message says what to check."""

    def __init__(self, message: str, cause: ConnectCause, bootstrap_servers: str) -> None:
        super().__init__(message)
        self.cause: ConnectCause = cause
        self.bootstrap_servers = bootstrap_servers
