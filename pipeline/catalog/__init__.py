"""Configuration loaded from `PIPELINE_CONFIG_DIR`: the model catalog and the routing policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.models import ModelSpec, Price, load_models
from pipeline.catalog.routing import Route, RoutingPolicy, load_routing

MODELS_FILE = "models.yaml"
ROUTING_FILE = "routing.yaml"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Models and routes, validated together; immutable so in-flight work keeps its view."""

    models: dict[str, ModelSpec]
    routing: RoutingPolicy


def load_catalog(config_dir: Path) -> Catalog:
    """Load both files; raises ConfigError naming the file, entry and problem."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise ConfigError(config_dir, "", "configuration directory not found (set PIPELINE_CONFIG_DIR)")
    models = load_models(config_dir / MODELS_FILE)
    routing = load_routing(config_dir / ROUTING_FILE, models)
    return Catalog(models=models, routing=routing)


__all__ = ["Catalog", "ConfigError", "ModelSpec", "Price", "Route", "RoutingPolicy", "load_catalog"]
