"""Process-wide logging setup: our records at the configured level, libraries quieter."""

from __future__ import annotations

import logging

_NOISY = ("aiokafka", "faststream", "pipeline.kafka", "LiteLLM", "litellm", "httpx", "httpcore", "asyncio")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
