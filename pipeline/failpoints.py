"""Named crash points for failure tests: `PIPELINE_FAILPOINTS=sink_after_insert` makes the
process exit at once (as a SIGKILL would) when it reaches that point. Unset in production."""

from __future__ import annotations

import os

_ACTIVE = frozenset(p.strip() for p in os.environ.get("PIPELINE_FAILPOINTS", "").split(",") if p.strip())


def hit(name: str) -> None:
    if name in _ACTIVE:
        os._exit(137)
