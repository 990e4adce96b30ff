"""The configuration in force, reloaded without a restart when its files change or on SIGHUP.

A request takes one snapshot (`live()`) when it starts and keeps it to the end, so in-flight
requests finish on the configuration they started with. An invalid new file is rejected with a
logged reason and the last good configuration stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pipeline.catalog import (
    LITELLM_FILE,
    MODELS_FILE,
    ROUTING_FILE,
    TEMPLATES_FILE,
    Catalog,
    ConfigError,
    load_catalog,
)
from pipeline.observability.metrics import CONFIG_RELOADS

log = logging.getLogger(__name__)


class LiveCatalog:
    def __init__(self, config_dir: Path, initial: Catalog | None = None, litellm_config: Path | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.litellm_config = Path(litellm_config) if litellm_config is not None else None
        self._stamp = self._file_stamp()
        self._current = initial or load_catalog(self.config_dir, self.litellm_config)
        self.reloads = 0
        self.rejected = 0
        self.last_error: str | None = None

    def __call__(self) -> Catalog:
        return self._current

    def _file_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        files = [self.config_dir / name for name in (MODELS_FILE, ROUTING_FILE, TEMPLATES_FILE, LITELLM_FILE)]
        for file in files + ([self.litellm_config] if self.litellm_config is not None else []):
            try:
                st = file.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamps.append((0, 0))
        return tuple(stamps)

    def reload(self) -> bool:
        """Load the files now; True when a new configuration took effect."""
        self._stamp = self._file_stamp()
        try:
            catalog = load_catalog(self.config_dir, self.litellm_config)
        except ConfigError as exc:
            self.rejected += 1
            CONFIG_RELOADS.labels("rejected").inc()
            self.last_error = str(exc)
            log.error("configuration reload rejected, keeping the last good one: %s", exc)
            return False
        self._current = catalog
        self.reloads += 1
        CONFIG_RELOADS.labels("ok").inc()
        self.last_error = None
        log.info("configuration reloaded from %s", self.config_dir)
        return True

    def reload_if_changed(self) -> bool:
        return self._file_stamp() != self._stamp and self.reload()

    async def watch(self, interval_s: float) -> None:
        """Poll the files' modification stamps; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.reload_if_changed()
