"""Credentials in CLICKHOUSE_URL / REDIS_URL: parsed for use, masked wherever shown."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from pydantic import SecretStr

from pipeline.cli.checks import _clickhouse
from pipeline.settings import Settings
from pipeline.transport.clickhouse import ClickHouseUsageStore, server_target
from pipeline.urls import mask_url, redact, split_credentials

PASSWORD = "ch-PW-LEAKCHECK:/@x"  # needs percent-encoding in a URL
ENCODED = quote(PASSWORD, safe="")


def test_split_credentials_decodes_and_strips_them() -> None:
    creds = split_credentials(f"https://analyst:{ENCODED}@ch.example:8443/?compress=lz4")
    assert creds.url == "https://ch.example:8443/?compress=lz4"
    assert (creds.username, creds.password) == ("analyst", PASSWORD)
    assert PASSWORD not in repr(creds)
    assert split_credentials("http://ch:8123").username is None
    assert split_credentials("http://user@ch:8123").password is None


@pytest.mark.parametrize(("url", "user", "password", "expected"), [
    (f"https://analyst:{ENCODED}@ch:8443", "default", "", ("https", "analyst", PASSWORD)),
    ("https://ch:8443", "svc", PASSWORD, ("https", "svc", PASSWORD)),  # separate settings
    ("https://analyst@ch:8443", "default", PASSWORD, ("https", "analyst", PASSWORD)),  # user from the URL
    (f"http://analyst:{ENCODED}@ch:8123", "svc", "other", ("http", "analyst", PASSWORD)),  # the URL wins
    ("HTTP://ch", "", "", ("http", "default", "")),
])
def test_server_target_precedence(url: str, user: str, password: str, expected: tuple[str, str, str]) -> None:
    target = server_target(url, user, password)
    assert (target.interface, target.username, target.password) == expected
    assert "@" not in target.url and PASSWORD not in repr(target)


def test_server_target_rejects_other_schemes_without_quoting_the_url() -> None:
    with pytest.raises(ValueError, match="must be chdb://, http:// or https://") as err:
        server_target(f"tcp://u:{ENCODED}@ch:9000")
    assert PASSWORD not in str(err.value) and ENCODED not in str(err.value)


def test_the_store_shows_only_the_masked_url() -> None:
    store = ClickHouseUsageStore(f"https://analyst:{ENCODED}@ch:8443", "llm")
    try:
        assert store.url == "https://analyst:***@ch:8443"
        assert PASSWORD not in repr(vars(store).get("url")) and ENCODED not in store.url
    finally:
        store.close()


def test_mask_and_redact() -> None:
    assert mask_url(f"https://u:{ENCODED}@ch:8443/db?x=1") == "https://u:***@ch:8443/db?x=1"
    assert mask_url(None) == "" and mask_url("chdb:///data") == "chdb:///data"
    text = f"failed https://u:{ENCODED}@ch:8443 with {PASSWORD} and {ENCODED}"
    out = redact(text, (PASSWORD,))
    assert PASSWORD not in out and ENCODED not in out and out.count("***") == 3


async def test_pipeline_check_never_prints_the_clickhouse_password() -> None:
    for settings in (
        Settings(clickhouse_url=f"https://analyst:{ENCODED}@127.0.0.1:1"),
        Settings(clickhouse_url="https://127.0.0.1:1", clickhouse_user="analyst",
                 clickhouse_password=SecretStr(PASSWORD)),
        Settings(clickhouse_url=f"tcp://analyst:{ENCODED}@127.0.0.1:1"),
    ):
        result = await _clickhouse(settings)
        assert not result.ok and "127.0.0.1:1" in result.detail
        assert PASSWORD not in result.detail and ENCODED not in result.detail, result.detail
        assert PASSWORD not in repr(settings) and ENCODED not in repr(settings)
