"""The embedded ClickHouse engine (chDB): telling "another process holds it" from a real failure.

chDB admits one process per data directory. When another process holds it, the exception
clickhouse-connect raises says only "Error initializing EmbeddedServer" (Code 36 in chDB 4.4);
the reason, `Code: 76 ... Cannot lock file ... Another server instance in same directory is
already running (CANNOT_OPEN_FILE)`, is written by the engine to the process's native stderr.
So an open attempt captures that stream (file descriptor 2, which Python's sys.stderr does not
cover), decides on the engine's own error code and message, and passes on whatever else the
engine wrote: the lock message never reaches a user, and no guess is made from file names in
the data directory.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: The engine's words for a data directory another process holds, by error code and by message.
_HELD = re.compile(
    r"Code:\s*76\b|CANNOT_OPEN_FILE|Cannot lock file|Another server instance in same directory", re.IGNORECASE
)


def held_by_another_process(exc: BaseException, diagnostics: str = "") -> bool:
    """Whether a failed open means "another process has this data directory" (so: wait)."""
    texts = [diagnostics]
    seen: BaseException | None = exc
    while seen is not None and len(texts) < 8:
        texts.append(f"{seen} {getattr(seen, 'code', '') or ''}")
        seen = seen.__cause__ or seen.__context__
    return any(_HELD.search(text) for text in texts)


class NativeStderr:
    """What the engine wrote to file descriptor 2 while captured."""

    text: str = ""


@contextmanager
def capture_native_stderr() -> Iterator[NativeStderr]:
    """Redirect file descriptor 2 into a temporary file for the duration (process-wide: keep
    it short); the captured text is on the yielded object afterwards."""
    captured = NativeStderr()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def pass_on(diagnostics: str) -> None:
    """Write captured engine output back to stderr, less the lock messages we handled."""
    rest = "".join(line for line in diagnostics.splitlines(keepends=True) if not _HELD.search(line))
    if rest.strip():
        sys.stderr.write(rest)
        sys.stderr.flush()
