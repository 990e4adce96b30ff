"""A service's shutdown always ends: leftovers are cancelled, a task that will not stop is named."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pipeline.lifecycle import ShutdownHung, run_service


def test_leftover_tasks_are_cancelled_and_the_run_ends() -> None:
    cancelled: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("background")
            raise

    async def main() -> None:
        asyncio.create_task(background(), name="background")  # noqa: RUF006 -- left running on purpose
        await asyncio.sleep(0)

    run_service(main, leftover_grace_s=5)
    assert cancelled == ["background"]


def test_a_task_that_swallows_cancellation_is_named_with_its_stack_and_the_exit_is_prompt(caplog) -> None:
    never = None

    async def stubborn() -> None:
        nonlocal never
        never = asyncio.get_running_loop().create_future()
        while True:
            try:
                await never
            except asyncio.CancelledError:
                never = asyncio.get_running_loop().create_future()  # a cleanup that waits for nothing

    async def main() -> None:
        asyncio.create_task(stubborn(), name="stubborn-renewer")  # noqa: RUF006 -- left running on purpose
        await asyncio.sleep(0)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="pipeline.lifecycle"), pytest.raises(ShutdownHung) as hung:
        run_service(main, leftover_grace_s=0.3)
    assert time.monotonic() - started < 5
    assert hung.value.names == ["stubborn-renewer"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "stubborn-renewer" in logged and "in stubborn" in logged  # the frame it is stuck in


def test_main_errors_still_end_the_leftovers() -> None:
    async def main() -> None:
        asyncio.create_task(asyncio.sleep(3600), name="sleeper")  # noqa: RUF006 -- left running on purpose
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_service(main, leftover_grace_s=1)
