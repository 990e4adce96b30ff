"""Configuration loaded from `PIPELINE_CONFIG_DIR`: the model catalog, the routing policy and the
prompt templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.models import ModelSpec, Price, load_models
from pipeline.catalog.routing import Route, RoutingPolicy, load_routing
from pipeline.catalog.templates import PromptTemplate, load_templates

MODELS_FILE = "models.yaml"
ROUTING_FILE = "routing.yaml"
TEMPLATES_FILE = "templates.yaml"  # optional


@dataclass(frozen=True, slots=True)
class Catalog:
    """Models, routes and templates, validated together; immutable so in-flight work keeps its view."""

    models: dict[str, ModelSpec]
    routing: RoutingPolicy
    templates: dict[str, PromptTemplate] = field(default_factory=dict)


def load_catalog(config_dir: Path) -> Catalog:
    """Load the files (templates.yaml is optional); raises ConfigError naming the file, entry and problem."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise ConfigError(config_dir, "", "configuration directory not found (set PIPELINE_CONFIG_DIR)")
    models = load_models(config_dir / MODELS_FILE)
    routing = load_routing(config_dir / ROUTING_FILE, models)
    templates = load_templates(config_dir / TEMPLATES_FILE)
    return Catalog(models=models, routing=routing, templates=templates)


__all__ = [
    "MODELS_FILE",
    "ROUTING_FILE",
    "TEMPLATES_FILE",
    "Catalog",
    "ConfigError",
    "ModelSpec",
    "Price",
    "PromptTemplate",
    "Route",
    "RoutingPolicy",
    "load_catalog",
    "load_templates",
]
