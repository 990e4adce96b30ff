"""Session-wide real parts: one Apache Kafka broker, one provider simulator, one chDB path.

Each test gets fresh topics, consumer groups and a fresh ClickHouse database, so tests never
see each other's data while sharing the expensive processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Session fixture -> the marker of the real part it starts (see pyproject's `markers`).
_NEEDS = {"kafka_bootstrap": "kafka", "redis_url": "redis", "redis_auth": "redis", "redis_tls": "redis",
          "chdb_dir": "chdb"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with what it needs, from the fixtures it uses (directly or through others),
    and from a backend parameter named "redis" (one test body run against every backend)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _NEEDS.items():
            if fixture in names:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "redis" in callspec.params.values():
            item.add_marker("redis")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """An Apache Kafka 4 broker (KRaft) on a free loopback port; or TEST_KAFKA_BOOTSTRAP if set."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from pipeline.local.apache_kafka import ApacheKafka

    broker = ApacheKafka()
    broker.start(timeout_s=120)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
async def litellm_provider() -> AsyncIterator[object]:
    """`LiteLLMProvider`, LiteLLM's real provider code (for calls to the simulator); its clients closed after."""
    from pipeline.transport.llm import LiteLLMProvider

    provider = LiteLLMProvider()
    yield provider
    await provider.aclose()


@pytest.fixture(scope="session")
async def simulator() -> AsyncIterator[object]:
    """The provider simulator; config/models.yaml's sim-* entries point at it."""
    from pipeline.simulator import ProviderSimulator, SimulatorConfig

    sim = ProviderSimulator(SimulatorConfig(latency_ms=5))
    await sim.start()
    os.environ["PIPELINE_SIMULATOR_URL"] = sim.url
    yield sim
    await sim.stop()


@pytest.fixture
async def sim(simulator: object) -> AsyncIterator[object]:
    """The session simulator with no fault rules and an empty request log."""
    from pipeline.simulator import SimulatorClient

    async with SimulatorClient(simulator.url) as client:  # type: ignore[attr-defined]
        await client.clear_rules()
        await client.clear_requests()
        await client.configure(latency_ms=5, latency_jitter_ms=0)
        yield client
        await client.clear_rules()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB allows one data path per process, so every test shares this one (separate databases)."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka_bootstrap: str, chdb_dir: Path, test_id: str, simulator: object):
    from pipeline.settings import Settings

    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_fetch_max_wait_ms=100,
        consumer_group=f"workers-{test_id}",
        usage_consumer_group=f"sink-{test_id}",
        topic_requests=f"llm.requests.{test_id}",
        topic_replies=f"llm.replies.{test_id}",
        topic_usage=f"llm.usage.{test_id}",
        topic_dlq=f"llm.requests.dlq.{test_id}",
        topic_usage_dlq=f"llm.usage.dlq.{test_id}",
        topic_alerts=f"llm.alerts.{test_id}",
        clickhouse_url=f"chdb://{chdb_dir}",
        clickhouse_database=f"t_{test_id}",
        usage_flush_interval_s=0.2,
        config_dir=REPO / "config",
        provider_timeout_s=10,
        http_port=0,
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; TEST_REDIS_URL wins if set."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    from pipeline.local.redis_server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


#: The password of the `redis_auth` and `redis_tls` servers: distinctive, so leak tests can grep for it.
REDIS_TEST_PASSWORD = "redis-pw-LEAKCHECK-7f3a"


@pytest.fixture(scope="session")
def redis_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A redis-server with `requirepass` (`.url` carries the password, `.password` is it)."""
    from pipeline.local.redis_server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis-auth"), password=REDIS_TEST_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A TLS-only redis-server with `requirepass`, its certificate signed by a throwaway CA
    (`.tls.ca_cert`); `.url` is `rediss://:password@127.0.0.1:port/0`."""
    from pipeline.local.redis_server import RedisServer, TlsFiles

    work = tmp_path_factory.mktemp("redis-tls")
    with RedisServer(work, password=REDIS_TEST_PASSWORD, tls=TlsFiles.create(work / "tls")) as server:
        yield server
