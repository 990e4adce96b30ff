"""The embedded engine held by another process, on the locked chDB: wait, then a clear error.

chDB admits one data path per process, so the store under test uses the session's chDB path and
the other process opens the same one.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import ProgrammingError

from pipeline.transport.clickhouse import ClickHouseUsageStore, EmbeddedEngineBusy
from pipeline.transport.embedded_engine import capture_native_stderr, held_by_another_process

pytestmark = pytest.mark.chdb

HOLDER = """
import sys, time
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("SELECT 1")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
client.close()
"""


@contextmanager
def holding(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process that opens the engine at `path` and keeps it for `seconds`."""
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        try:
            yield proc
        finally:
            proc.kill()


def test_waits_for_another_process_and_keeps_its_lock_message_off_stderr(chdb_dir: Path, capfd) -> None:
    store = ClickHouseUsageStore(f"chdb://{chdb_dir}", "lock_wait", lock_wait_s=30)
    with holding(chdb_dir, 2.0):
        started = time.monotonic()
        try:
            with store._session() as client:
                assert client.command("SELECT 41 + 1") == 42
            assert time.monotonic() - started >= 0.5  # it really waited for the holder
        finally:
            store._release()
    err = capfd.readouterr().err
    assert "Cannot lock" not in err and "Another server instance" not in err and "Unable to open" not in err


def test_gives_up_with_a_clear_error_after_lock_wait_s(chdb_dir: Path, capfd) -> None:
    store = ClickHouseUsageStore(f"chdb://{chdb_dir}", "lock_wait", lock_wait_s=0.5)
    with holding(chdb_dir, 6.0), pytest.raises(
        EmbeddedEngineBusy, match=re.escape("held by another process (waited 0.5 s): stop it")
    ):
        store._connect()
    assert "Cannot lock" not in capfd.readouterr().err


def test_a_path_that_cannot_be_opened_fails_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = ClickHouseUsageStore(f"chdb://{blocker}/data", "nope", lock_wait_s=30)
    started = time.monotonic()
    with pytest.raises(ProgrammingError):
        store._connect()
    assert time.monotonic() - started < 10  # not the 30 s lock wait


def test_held_is_read_from_the_engines_code_and_message() -> None:
    generic = RuntimeError("Failed to create connection: Code: 36. DB::Exception: Error initializing "
                           "EmbeddedServer: . (BAD_ARGUMENTS)")
    assert not held_by_another_process(generic)
    lock_line = ("Code: 76. DB::Exception: Cannot lock file /data/status. Another server instance in same "
                 "directory is already running. (CANNOT_OPEN_FILE)")
    assert held_by_another_process(generic, lock_line)
    assert held_by_another_process(RuntimeError("x (CANNOT_OPEN_FILE)"))
    wrapped = ProgrammingError("Unable to open the chdb engine")
    wrapped.__cause__ = RuntimeError("Code: 76. DB::Exception: Cannot lock file")
    assert held_by_another_process(wrapped)
    assert not held_by_another_process(ValueError("Code: 760 something else"))


def test_capture_restores_stderr(capfd) -> None:
    import os

    with capture_native_stderr() as captured:
        os.write(2, b"engine says hi\n")
    os.write(2, b"after\n")
    assert captured.text == "engine says hi\n"
    assert capfd.readouterr().err == "after\n"
