"""Catalogs for tests: a models.yaml and a routing.yaml written to a directory, loaded as in production."""

from __future__ import annotations

from pathlib import Path

from pipeline.catalog import Catalog, load_catalog


def catalog_from(directory: Path, models: str, routing: str) -> Catalog:
    """Write both files to `directory/cfg` and load them (ConfigError for a bad one, as at start-up)."""
    d = directory / "cfg"
    d.mkdir(parents=True, exist_ok=True)
    (d / "models.yaml").write_text(models)
    (d / "routing.yaml").write_text(routing)
    return load_catalog(d)
