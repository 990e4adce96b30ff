"""The one way state backends connect to Redis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings


def connect(
    url: str, *, max_connections: int = 100, password: str | None = None, ca_file: str | Path | None = None
) -> Any:
    """A client on a *blocking* pool: a burst of more concurrent commands than connections waits
    for one (up to 10 s) instead of failing with MaxConnectionsError, redis-py's default.

    AUTH: `redis://:password@host:6379/0` (or `redis://user:password@...` for an ACL user); a
    password in the URL wins over `password` (PIPELINE_REDIS_PASSWORD). TLS: `rediss://`, the
    server's certificate checked against the system CAs or `ca_file` (PIPELINE_REDIS_TLS_CA_FILE)."""
    import redis.asyncio as aioredis

    options: dict[str, Any] = {}
    if password:
        options["password"] = password  # redis-py lets the URL's own password override it
    if ca_file and url.strip().lower().startswith("rediss://"):
        options["ssl_ca_certs"] = str(ca_file)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10, **options)
    return aioredis.Redis.from_pool(pool)


def connect_from_settings(settings: Any, *, max_connections: int = 100) -> Any:
    """`connect()` with REDIS_URL, PIPELINE_REDIS_PASSWORD and PIPELINE_REDIS_TLS_CA_FILE."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return connect(settings.redis_url.strip(), max_connections=max_connections, password=password,
                   ca_file=settings.redis_tls_ca_file)


class RedisAuthError(ConnectionError):
    """Redis refused the password (or wants one): a setting to fix, not an outage to wait out.
    The message names the URL with its password masked, never a password."""


def is_auth_failure(exc: BaseException) -> bool:
    return "AuthenticationError" in type(exc).__name__ or any(s in str(exc) for s in ("WRONGPASS", "NOAUTH"))


async def check_credentials(client: Any, settings: Settings, *, timeout_s: float = 5.0) -> None:
    """PING once at start-up. A refused password raises RedisAuthError at once (without this the
    worker would take it for an outage and wait on every partition); an unreachable Redis is
    left to the intake, which waits it out like any outage."""
    import asyncio

    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except Exception as exc:
        if is_auth_failure(exc):
            password = settings.redis_password.get_secret_value() if settings.redis_password else None
            raise RedisAuthError(describe_redis_error(exc, settings.redis_url or "", password)) from None


def describe_redis_error(exc: BaseException, url: str, password: str | None = None) -> str:
    """One line for an operator: the error, the URL with its password masked, never a password
    (redis-py's messages quote host and port only, but a URL may be echoed back)."""
    from pipeline.urls import mask_url, redact, split_credentials

    text = f"{type(exc).__name__}: {exc}"
    if is_auth_failure(exc):
        text += " (check the password in REDIS_URL or PIPELINE_REDIS_PASSWORD)"
    return f"{mask_url(url)}: " + redact(text, (password, split_credentials(url).password))


def is_redis_outage(exc: BaseException) -> bool:
    """Redis unreachable or too slow: retry later. (A wrong command or script is a bug, not an outage.)"""
    try:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, BusyLoadingError))
