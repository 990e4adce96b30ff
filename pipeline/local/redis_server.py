"""A throwaway redis-server on a free loopback port, for tests and local multi-worker runs."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipeline.local import BrokerStartError, free_ports

INSTALL_HINT = "install it with `apt-get install -y redis-server` (scripts/test.sh does this)"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, days: int = 2) -> TlsFiles:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise BrokerStartError("openssl is not on PATH: needed to make the test certificates")
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca, key, csr, cert, ext = (directory / n for n in
                                           ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext.cnf"))
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for args in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", days,
             "-subj", "/CN=llm-pipeline test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", days, "-extfile", ext],
        ):
            subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
        return cls(ca, cert, key)


def _pings(port: int, password: str | None = None, tls: TlsFiles | None = None) -> bool:
    hello = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    try:
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.ca_cert))
                s = stack.enter_context(context.wrap_socket(s, server_hostname="127.0.0.1"))
            s.sendall(hello)
            answer = b""
            while b"PONG" not in answer and len(answer) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                answer += chunk
            return b"+PONG" in answer
    except OSError:
        return False


class RedisServer:
    """`with RedisServer(dir) as r: r.url` — memory only (no RDB, no AOF), bound to 127.0.0.1.

    `password` sets `requirepass` (the URL then carries it: `redis://:password@...`); `tls`
    serves TLS only (`rediss://`, the certificate signed by `tls.ca_cert`)."""

    def __init__(self, work_dir: Path, *, password: str | None = None, tls: TlsFiles | None = None) -> None:
        self.work_dir = work_dir
        self.port = 0
        self.password = password
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        args = ["--port", str(self.port)]
        if self.tls is not None:
            args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                    "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca_cert),
                    "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout_s: float = 10) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerStartError(f"redis-server is not on PATH: {INSTALL_HINT}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may grab the port between probe and bind
            (self.port,) = free_ports(1)
            self._proc = subprocess.Popen(
                [binary, *self._arguments(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.work_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _pings(self.port, self.password, self.tls):
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
