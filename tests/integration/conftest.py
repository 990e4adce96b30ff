"""Fixtures that start a worker (request consumer + usage sink) on the session broker."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from pipeline.catalog import load_catalog
from pipeline.settings import Settings
from pipeline.worker.app import Worker, create_worker

pytestmark = pytest.mark.kafka


@pytest.fixture
async def start_worker(settings: Settings, sim: object) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """`await start_worker(**setting_overrides)`; every worker started is stopped at teardown."""
    started: list[Worker] = []

    async def start(catalog: Any = None, reload_config: bool = False, **overrides: Any) -> Worker:
        worker_settings = settings.model_copy(update=overrides) if overrides else settings
        if catalog is None and not reload_config:
            catalog = load_catalog(worker_settings.config_dir)
        worker = create_worker(worker_settings, catalog=catalog, reload_config=reload_config)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in reversed(started):
        await worker.stop()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The worker's logging as in production (`configure_logging`: JSON lines), at DEBUG so that
    every line the pipeline can write is checked. The handler's stream is swapped for a buffer
    (pytest's own capture closes the streams it lends out between phases); the previous logging
    set-up is put back afterwards."""
    from pipeline.observability.logs import _NOISY, JsonFormatter, configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in _NOISY}
    configure_logging("DEBUG", "json")
    (handler,) = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
    buffer = io.StringIO()
    handler.setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
