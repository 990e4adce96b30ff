"""Running a long-lived service so that it always ends: a bounded shutdown that names what hung.

`asyncio.run` cancels leftover tasks and then waits for them without limit, so one task that
swallows its cancellation (or awaits a future nobody will resolve) keeps a SIGTERMed worker
alive until the orchestrator kills it, with nothing in the log. Here leftovers get
`leftover_grace_s`; whatever is still pending is logged with its stack and the process exits
non-zero (`ShutdownHung`), so the hang is seen and the exit is prompt.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class ShutdownHung(RuntimeError):
    """Tasks were still pending `leftover_grace_s` after they were cancelled."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"{len(names)} task(s) did not stop when cancelled: {', '.join(names)}")
        self.names = names


def describe_task(task: asyncio.Task[Any]) -> str:
    """A task's name, coroutine and the stack it is suspended in."""
    out = io.StringIO()
    task.print_stack(limit=30, file=out)
    return f"{task.get_name()} ({task.get_coro()!r}):\n{out.getvalue()}"


async def cancel_leftovers(leftover_grace_s: float) -> list[asyncio.Task[Any]]:
    """Cancel every other task of this loop; the ones still pending after the grace period."""
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if not leftovers:
        return []
    log.debug("cancelling %d leftover task(s) at shutdown: %s", len(leftovers), [t.get_name() for t in leftovers])
    for task in leftovers:
        task.cancel()
    _, pending = await asyncio.wait(leftovers, timeout=leftover_grace_s)
    for task in leftovers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("task %s ended with an error at shutdown: %r", task.get_name(), task.exception())
    for task in pending:
        log.error("shutdown: task did not stop within %.0f s of being cancelled: %s", leftover_grace_s,
                  describe_task(task))
    return list(pending)


def _bounded(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, None], timeout_s: float, what: str) -> None:
    try:
        loop.run_until_complete(asyncio.wait_for(step, timeout_s))
    except TimeoutError:
        log.error("shutdown: %s took longer than %.0f s; exiting without it", what, timeout_s)


def run_service(
    main: Callable[[], Coroutine[Any, Any, None]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    leftover_grace_s: float = 5.0,
) -> None:
    """Run `main` to completion, then end every other task within `leftover_grace_s`.

    Raises `ShutdownHung` (after closing the loop regardless) when some task would not stop.
    """
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    pending: list[asyncio.Task[Any]] = []
    try:
        loop.run_until_complete(main())
    finally:
        try:
            pending = loop.run_until_complete(cancel_leftovers(leftover_grace_s))
            if not pending:
                _bounded(loop, loop.shutdown_asyncgens(), leftover_grace_s, "closing async generators")
                _bounded(loop, loop.shutdown_default_executor(), leftover_grace_s, "joining the thread pool")
        finally:
            if pending:
                # The loop is closed with these still pending: silence asyncio's "destroyed but pending".
                for task in pending:
                    task._log_destroy_pending = False  # type: ignore[attr-defined]
            loop.close()
    if pending:
        raise ShutdownHung([t.get_name() for t in pending])
