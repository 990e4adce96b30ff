"""Apache Kafka 4.x (KRaft, single node) from Maven Central jars, for tests/CI/benchmarks.

Why jars from Maven rather than a tarball or Docker: Maven Central is the one
artifact source reachable from every environment we run in (CI, sandboxes, dev
laptops), ``mvn`` resolves the exact runtime classpath from ``deploy/kafka/pom.xml``
and caches it in ``~/.m2``. The jars are copied once into a versioned cache dir.

Usage::

    with ApacheKafka() as kafka:            # formats storage, starts, waits for readiness
        use(kafka.bootstrap_servers)        # "127.0.0.1:PORT"

    python -m pipeline.local.apache_kafka fetch       # prefetch jars (CI cache step)
    python -m pipeline.local.apache_kafka run [--port N]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.local import BrokerStartError, SubprocessBroker, free_ports, tail

__all__ = ["ApacheKafka", "BrokerStartError", "ensure_jars", "kafka_version", "main"]

POM = Path(__file__).resolve().parents[2] / "deploy/kafka/pom.xml"
DEFAULT_VERSION = "4.1.1"  # used only to name the cache dir when the pom is absent
MARKER = ".complete"

# Loggers that print pages at INFO on every start (config dumps, raft/metadata
# replay, per-partition state changes) and drown the lines worth reading.
NOISY_LOGGERS = [
    "org.apache.kafka.common.config", "org.apache.kafka.common.utils.AppInfoParser",
    "org.apache.kafka.clients", "org.apache.kafka.raft", "org.apache.kafka.controller",
    "org.apache.kafka.metadata", "org.apache.kafka.image", "org.apache.kafka.storage",
    "org.apache.kafka.server", "kafka.server.metadata", "kafka.log", "kafka.cluster",
    "kafka.raft", "kafka.network", "kafka.request.logger", "state.change.logger",
]


def _tool(name: str) -> str:
    """Absolute path of java/mvn, or a RuntimeError naming the missing one."""
    if name == "java" and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        hint = "a JDK/JRE 17+ (or set JAVA_HOME)" if name == "java" else "Apache Maven 3.8+"
        raise RuntimeError(f"`{name}` not found on PATH: install {hint} to run Apache Kafka locally")
    return found


def kafka_version(pom: Path = POM) -> str:
    if not pom.exists():
        return DEFAULT_VERSION
    props = ET.parse(pom).getroot().find("{http://maven.apache.org/POM/4.0.0}properties")
    node = props.find("{http://maven.apache.org/POM/4.0.0}kafka.version") if props is not None else None
    return node.text.strip() if node is not None and node.text else DEFAULT_VERSION


def default_jars_dir() -> Path:
    if env := os.environ.get("PIPELINE_KAFKA_JARS"):
        return Path(env)
    return Path.home() / ".cache" / "llm-pipeline" / f"kafka-{kafka_version()}"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Return a dir holding the broker classpath, fetching it with Maven on first use.

    The copy goes to a sibling temp dir that is renamed into place with its
    marker already inside, so a concurrent or interrupted fetch never leaves a
    half-filled dir that looks complete.
    """
    target = Path(cache_dir) if cache_dir else default_jars_dir()
    if (target / MARKER).exists():
        return target
    if not POM.exists():
        raise RuntimeError(
            f"Kafka pom not found at {POM}; fetching jars needs a checkout of the repo "
            "(or point PIPELINE_KAFKA_JARS at a dir of jars containing a .complete marker)"
        )
    mvn = _tool("mvn")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
        (tmp / MARKER).write_text("\n".join(sorted(p.name for p in tmp.glob("*.jar"))) + "\n")
        if target.exists() and not (target / MARKER).exists():
            shutil.rmtree(target)  # leftover of an older, incomplete layout
        try:
            tmp.rename(target)
        except OSError:
            if not (target / MARKER).exists():  # lost a race to a concurrent fetch: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _random_cluster_id() -> str:
    """Kafka's Uuid.randomUuid() format: url-safe base64, no padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class ApacheKafka(SubprocessBroker):
    """Single-node KRaft broker+controller on 127.0.0.1, data and logs in ``work_dir``."""

    name = "apache-kafka"

    def __init__(
        self, work_dir: Path | None = None, jars_dir: Path | None = None,
        heap: str = "512m", port: int | None = None,
    ) -> None:
        super().__init__(work_dir)
        self.jars_dir = jars_dir
        self.heap = heap
        self._want_port = port
        self.controller_port = 0

    def _classpath(self) -> str:
        return f"{ensure_jars(self.jars_dir)}/*"

    def _prepare(self) -> None:
        assert self.work_dir is not None
        java, classpath = _tool("java"), self._classpath()
        self.port, self.controller_port = free_ports(2)
        if self._want_port:
            self.port = self._want_port
        self.cluster_id = _random_cluster_id()
        wd = self.work_dir
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(wd / "data"),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.coordinator.rebalance.protocols": "classic,consumer",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # Tests write little and often: small segments, short retention.
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.retention.ms": str(60 * 60 * 1000),
            "log.retention.check.interval.ms": "60000",
            "offsets.topic.segment.bytes": str(16 * 1024 * 1024),
            # After kill(), restart() is refused (DUPLICATE_BROKER_REGISTRATION) until the
            # dead incarnation's session expires: 9 s by default, 4 s here.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
        }
        (wd / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = [
            "status = warn", "appender.file.type = File", "appender.file.name = FILE",
            f"appender.file.fileName = {wd / 'server.log'}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO", "rootLogger.appenderRef.file.ref = FILE",
        ]
        for i, name in enumerate(NOISY_LOGGERS):
            log4j += [f"logger.n{i}.name = {name}", f"logger.n{i}.level = WARN"]
        (wd / "log4j2.properties").write_text("\n".join(log4j) + "\n")
        meta = wd / "data" / "meta.properties"
        if meta.exists():  # caller-provided work dir formatted by an earlier run: keep its data
            self.cluster_id = next(
                line.split("=", 1)[1].strip()
                for line in meta.read_text().splitlines()
                if line.startswith("cluster.id=")
            )
            return
        # Short-lived tool: C1-only JIT and serial GC start it ~40% faster.
        fmt = [java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", classpath,
               f"-Dlog4j2.configurationFile={wd / 'log4j2.properties'}",
               "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", "server.properties"]
        res = subprocess.run(fmt, cwd=wd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BrokerStartError(f"kafka storage format failed ({res.returncode}):\n{res.stdout}{res.stderr}")

    def _command(self) -> list[str]:
        assert self.work_dir is not None
        return [
            _tool("java"), f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            "-cp", self._classpath(), f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "kafka.Kafka", "server.properties",
        ]

    def _logs(self) -> str:
        assert self.work_dir is not None
        return f"--- server.log (last 40 lines) ---\n{tail(self.work_dir / 'server.log')}\n{super()._logs()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.local.apache_kafka", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars (once) and print their dir")
    run = sub.add_parser("run", help="start a broker and block until Ctrl-C/SIGTERM")
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--work-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        print(ensure_jars())
        return 0

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    kafka = ApacheKafka(work_dir=args.work_dir, port=args.port)
    try:
        kafka.start()
        print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
