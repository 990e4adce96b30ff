"""Fixtures that start a worker (request consumer + usage sink) on the session broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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
