"""Process-wide logging: one JSON object per line (or plain text), libraries quieter.

Request context travels in `extra=` (request_id, tenant, task_type, model) and becomes JSON
fields. Prompt text and secrets are never logged: the pipeline logs ids, not content, and the
libraries that would (the provider SDKs log whole request bodies at DEBUG) are held at WARNING
whatever LOG_LEVEL says.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_NOISY = ("aiokafka", "faststream", "pipeline.kafka", "LiteLLM", "litellm", "httpx", "httpcore", "asyncio",
          "aiohttp.access", "openai", "anthropic")
#: Fields that log calls may pass in `extra=` and that become top-level JSON keys.
CONTEXT_FIELDS = ("request_id", "tenant", "task_type", "model", "status", "attempts", "cost_usd", "error_code",
                  "deployment", "topic", "partition", "offset")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
