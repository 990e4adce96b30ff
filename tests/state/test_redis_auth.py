"""Redis with AUTH (`requirepass`) and TLS: the state backends work over `redis://:password@...`
and `rediss://` with a CA file; a wrong password fails clearly and never shows the password."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from pipeline.cli.checks import _redis
from pipeline.settings import Settings
from pipeline.state import shared_state_from_settings
from pipeline.state.budget import BudgetLine, Reserved
from pipeline.state.redis_client import describe_redis_error
from pipeline.urls import mask_url
from tests.conftest import REDIS_TEST_PASSWORD


def _settings(**kw: object) -> Settings:
    return Settings(**{"redis_namespace": f"auth-{uuid.uuid4().hex[:12]}", "response_cache": "redis", **kw})  # type: ignore[arg-type]


async def _every_backend_works(settings: Settings) -> None:
    state = shared_state_from_settings(settings)
    try:
        assert await state.budgets.reserve([BudgetLine("k", "k", 100, 100)], 1) == Reserved()
        assert await state.health.cooling_down(["d"]) == {}
        await state.response_cache.set("k", b"v", 60)  # type: ignore[union-attr]
        assert await state.response_cache.get("k") == b"v"  # type: ignore[union-attr]
        keys = [k async for k in state.client.scan_iter(match=f"{settings.redis_namespace}:*")]
        await state.client.delete(*keys)
    finally:
        await state.aclose()


async def test_the_backends_work_with_the_password_in_the_url_or_apart(redis_auth) -> None:
    assert redis_auth.url == f"redis://:{REDIS_TEST_PASSWORD}@127.0.0.1:{redis_auth.port}/0"
    await _every_backend_works(_settings(redis_url=redis_auth.url))
    bare = f"redis://127.0.0.1:{redis_auth.port}/0"
    await _every_backend_works(_settings(redis_url=bare, redis_password=REDIS_TEST_PASSWORD))
    result = await _redis(_settings(redis_url=redis_auth.url))
    assert result.ok and REDIS_TEST_PASSWORD not in result.detail and ":***@" in result.detail


async def test_a_wrong_or_missing_password_fails_clearly_without_showing_it(redis_auth) -> None:
    wrong = "wrong-PW-DO-NOT-SHOW"
    url = f"redis://:{wrong}@127.0.0.1:{redis_auth.port}/0"
    state = shared_state_from_settings(_settings(redis_url=url))  # building connects nothing
    try:
        with pytest.raises(AuthenticationError) as err:
            await state.budgets.values(["k"])
    finally:
        await state.aclose()
    assert wrong not in str(err.value) and REDIS_TEST_PASSWORD not in str(err.value)
    described = describe_redis_error(err.value, url, wrong)
    assert "AuthenticationError" in described and "check the password" in described
    assert wrong not in described and ":***@127.0.0.1" in described

    result = await _redis(_settings(redis_url=url))
    assert not result.ok and "AuthenticationError" in result.detail and wrong not in result.detail
    no_password = await _redis(_settings(redis_url=f"redis://127.0.0.1:{redis_auth.port}/0"))
    assert not no_password.ok and "check the password" in no_password.detail, no_password.detail


async def test_tls_with_a_ca_file(redis_tls) -> None:
    assert redis_tls.url.startswith("rediss://")
    await _every_backend_works(_settings(redis_url=redis_tls.url, redis_tls_ca_file=redis_tls.tls.ca_cert))
    result = await _redis(_settings(redis_url=redis_tls.url, redis_tls_ca_file=redis_tls.tls.ca_cert))
    assert result.ok, result.detail
    # Without the CA the server's certificate is not trusted: refused, and no password shown.
    untrusted = await _redis(_settings(redis_url=redis_tls.url))
    assert not untrusted.ok and "certificate" in untrusted.detail.lower(), untrusted.detail
    assert REDIS_TEST_PASSWORD not in untrusted.detail
    # Plain redis:// to a TLS port is no answer either.
    plain = f"redis://:{REDIS_TEST_PASSWORD}@127.0.0.1:{redis_tls.port}/0"
    state = shared_state_from_settings(_settings(redis_url=plain, redis_tls_ca_file=redis_tls.tls.ca_cert))
    try:
        with pytest.raises(ConnectionError) as err:
            await state.budgets.values(["k"])
        assert REDIS_TEST_PASSWORD not in str(err.value)
    finally:
        await state.aclose()


def test_mask_url_keeps_everything_but_the_password() -> None:
    pw = quote("p@ss:w/rd", safe="")
    assert mask_url(f"redis://:{pw}@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url(f"rediss://app:{pw}@h:6380/1?ssl_cert_reqs=required") == "rediss://app:***@h:6380/1?ssl_cert_reqs=required"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
    assert mask_url("redis://user@h:6379/0") == "redis://user@h:6379/0"
    assert repr(Settings(redis_url=f"redis://:{pw}@h/0")).count(pw) == 0


async def test_a_wrong_password_stops_the_worker_at_start_naming_the_setting_not_the_password(
    settings, redis_auth,
) -> None:
    from pipeline.state.redis_client import RedisAuthError, check_credentials, connect_from_settings
    from pipeline.worker.app import create_worker

    wrong = f"wrong-{REDIS_TEST_PASSWORD}"
    url = f"redis://:{quote(wrong)}@127.0.0.1:{redis_auth.port}/0"
    client = connect_from_settings(_settings(redis_url=url))
    try:
        with pytest.raises(RedisAuthError) as refused:
            await check_credentials(client, _settings(redis_url=url))
    finally:
        await client.aclose()
    text = str(refused.value)
    assert f"redis://:***@127.0.0.1:{redis_auth.port}/0" in text and "check the password" in text
    assert wrong not in text and REDIS_TEST_PASSWORD not in text
    worker = create_worker(settings.model_copy(update={"redis_url": url, "redis_namespace": "auth-start"}))
    with pytest.raises(RedisAuthError):
        await worker.start()  # before the intake starts: no partition is taken and left waiting


async def test_an_unreachable_redis_at_start_is_left_to_the_intake_as_an_outage() -> None:
    from pipeline.state.redis_client import check_credentials, connect_from_settings

    settings = _settings(redis_url="redis://127.0.0.1:1/0")
    client = connect_from_settings(settings)
    try:
        await check_credentials(client, settings, timeout_s=2)  # no error: the outage is waited out later
    finally:
        await client.aclose()
