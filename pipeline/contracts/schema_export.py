"""Generate the public JSON Schemas in `schemas/` from the pydantic contracts.

`pipeline schemas` writes them; `pipeline schemas --check` (and a test) fails when the
committed files differ from what the models produce, so the contract cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.contracts.models import PUBLIC_EVENTS, SCHEMA_VERSION


def event_schema(name: str) -> dict[str, Any]:
    """The published JSON Schema of one public event (requests: what a producer may send)."""
    model = PUBLIC_EVENTS[name]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://llm-pipeline.dev/schemas/v{SCHEMA_VERSION}/{name}.schema.json",
        **model.model_json_schema(mode="serialization" if name != "completion_request" else "validation"),
    }


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys, trailing newline)."""
    return {f"{name}.schema.json": json.dumps(event_schema(name), indent=2, sort_keys=True) + "\n"
            for name in PUBLIC_EVENTS}


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drifted_schemas(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    stale = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
    return stale
