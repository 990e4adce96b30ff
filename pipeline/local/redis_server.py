"""A throwaway redis-server on a free loopback port, for tests and local multi-worker runs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from pipeline.local import BrokerStartError, free_ports

INSTALL_HINT = "install it with `apt-get install -y redis-server` (scripts/test.sh does this)"


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`with RedisServer(dir) as r: r.url` — memory only (no RDB, no AOF), bound to 127.0.0.1."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerStartError(f"redis-server is not on PATH: {INSTALL_HINT}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may grab the port between probe and bind
            (self.port,) = free_ports(1)
            self._proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.work_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _pings(self.port):
                    return
                time.sleep(0.05)
            self.stop()
        raise BrokerStartError(f"redis-server did not answer PING within {timeout_s} s (tried 3 ports)")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
