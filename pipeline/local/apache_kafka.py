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
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.local import BrokerStartError, SubprocessBroker, free_ports, probe_cluster_id, tail

__all__ = ["ApacheKafka", "BrokerStartError", "SecuredApacheKafka", "ensure_jars", "kafka_version", "main"]

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
    # Named after the pom's content too: a dependency added to it (kafka-tools) fetches a new set.
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:8] if POM.exists() else "nopom"
    return Path.home() / ".cache" / "llm-pipeline" / f"kafka-{kafka_version()}-{digest}"


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
        props.update(self._security_props())
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
               "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", "server.properties",
               *self._format_args()]
        res = subprocess.run(fmt, cwd=wd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BrokerStartError(f"kafka storage format failed ({res.returncode}):\n{res.stdout}{res.stderr}")

    def _security_props(self) -> dict[str, str]:
        """Listener and security properties replacing the plaintext ones (SecuredApacheKafka)."""
        return {}

    def _format_args(self) -> list[str]:
        """More `StorageTool format` arguments (SCRAM users)."""
        return []

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


#: Default and spelling of the secured broker's super user.
ADMIN_USER = "admin"


class SecuredApacheKafka(ApacheKafka):
    """The same broker behind one SASL_SSL listener, as a production cluster would be set up.

    - TLS: a throwaway CA and a broker certificate (SAN IP:127.0.0.1, DNS:localhost) made with
      openssl at start, in PKCS12 key and trust stores (keytool); `ca_file` is the CA's PEM for
      clients, `other_ca_file` a CA that signed nothing (an "untrusted CA" for tests).
    - SASL: SCRAM-SHA-512 and PLAIN; every user of `users` (name -> password) and the super
      user `admin` (password `admin_password`) exist for both, the SCRAM ones from format time.
    - ACLs: the StandardAuthorizer with allow.everyone.if.no.acl.found=false, so a user may do
      only what `acl(...)` (org.apache.kafka.tools.AclCommand, as kafka-acls) granted it.
    - The controller listener is SASL_PLAINTEXT with PLAIN (it cannot use SCRAM).
    """

    name = "apache-kafka-sasl-ssl"

    def __init__(self, work_dir: Path | None = None, jars_dir: Path | None = None, heap: str = "512m",
                 port: int | None = None, *, users: dict[str, str] | None = None) -> None:
        super().__init__(work_dir, jars_dir, heap, port)
        self.admin_password = uuid.uuid4().hex
        self.users = {ADMIN_USER: self.admin_password, **(users or {})}
        self._store_password = uuid.uuid4().hex

    # -- what clients need ----------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        assert self.work_dir is not None, "not started"
        return self.work_dir / "tls" / "ca.pem"

    @property
    def other_ca_file(self) -> Path:
        assert self.work_dir is not None, "not started"
        return self.work_dir / "tls" / "other-ca.pem"

    def client_options(self, user: str = ADMIN_USER, mechanism: str = "SCRAM-SHA-512") -> dict[str, object]:
        """aiokafka options (bootstrap, SASL_SSL, the CA) for `user`."""
        from aiokafka.helpers import create_ssl_context

        return {"bootstrap_servers": self.bootstrap_servers, "security_protocol": "SASL_SSL",
                "ssl_context": create_ssl_context(cafile=str(self.ca_file)), "sasl_mechanism": mechanism,
                "sasl_plain_username": user, "sasl_plain_password": self.users[user]}

    def acl(self, *args: str) -> str:
        """Run `kafka-acls` (AclCommand) as the super user, e.g. `acl("--add", "--allow-principal",
        "User:worker", "--operation", "Read", "--topic", "llm.requests")`; returns its output."""
        assert self.work_dir is not None, "not started"
        cmd = [_tool("java"), "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", self._classpath(),
               f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
               "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap_servers,
               "--command-config", str(self.work_dir / "admin.properties"), *args]
        res = subprocess.run(cmd, cwd=self.work_dir, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"kafka-acls {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res.stdout

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        assert self.work_dir is not None
        if not (self.work_dir / "tls" / "broker.p12").exists():
            self._make_certificates(self.work_dir / "tls")
        super()._prepare()
        tls = self.work_dir / "tls"
        (self.work_dir / "admin.properties").write_text("".join(f"{k}={v}\n" for k, v in {
            "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": self._jaas("scram", ADMIN_USER),
            "ssl.truststore.location": tls / "truststore.p12", "ssl.truststore.type": "PKCS12",
            "ssl.truststore.password": self._store_password,
        }.items()))

    def _make_certificates(self, tls: Path) -> None:
        tls.mkdir(parents=True, exist_ok=True)
        openssl, ec = _tool("openssl"), ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        pw = f"pass:{self._store_password}"
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "7",
             "-subj", "/CN=llm-pipeline test CA"],
            [openssl, "req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "7",
             "-subj", "/CN=some other CA"],
            [openssl, "req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1"],
            [openssl, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "7", "-extfile", "san.ext"],
            [openssl, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-out", "broker.p12", "-passout", pw],
            [_tool("keytool"), "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore",
             "truststore.p12", "-storetype", "PKCS12", "-storepass", self._store_password],
        ]
        (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for step in steps:
            res = subprocess.run(step, cwd=tls, capture_output=True, text=True)
            if res.returncode != 0:
                raise BrokerStartError(f"{' '.join(step[:3])} failed ({res.returncode}):\n{res.stdout}{res.stderr}")

    def _jaas(self, kind: str, user: str, *, serve: bool = False) -> str:
        module = ("org.apache.kafka.common.security.scram.ScramLoginModule" if kind == "scram"
                  else "org.apache.kafka.common.security.plain.PlainLoginModule")
        served = "".join(f' user_{name}="{pw}"' for name, pw in self.users.items()) if serve else ""
        return f'{module} required username="{user}" password="{self.users[user]}"{served};'

    def _security_props(self) -> dict[str, str]:
        assert self.work_dir is not None
        tls = self.work_dir / "tls"
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": self._jaas("scram", ADMIN_USER),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": self._jaas("plain", ADMIN_USER, serve=True),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": self._jaas("plain", ADMIN_USER, serve=True),
            "ssl.keystore.location": str(tls / "broker.p12"), "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": self._store_password, "ssl.key.password": self._store_password,
            "ssl.truststore.location": str(tls / "truststore.p12"), "ssl.truststore.type": "PKCS12",
            "ssl.truststore.password": self._store_password,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
        }

    def _format_args(self) -> list[str]:
        return [arg for name, pw in self.users.items()
                for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]")]

    def _probe(self) -> str | None:
        return probe_cluster_id(self.bootstrap_servers, self.client_options())


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
