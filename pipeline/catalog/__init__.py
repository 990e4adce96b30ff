"""Configuration loaded from `PIPELINE_CONFIG_DIR`: the model catalog, the routing policy and the
prompt templates."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalog.call_params import defer_secret
from pipeline.catalog.errors import ConfigError
from pipeline.catalog.litellm_config import LITELLM_FILE, read_litellm_config
from pipeline.catalog.models import ModelSpec, Price, load_models, parse_models
from pipeline.catalog.routing import Route, RoutingPolicy, load_routing
from pipeline.catalog.templates import PromptTemplate, load_templates
from pipeline.catalog.yaml_loader import interpolate

log = logging.getLogger(__name__)

MODELS_FILE = "models.yaml"
ROUTING_FILE = "routing.yaml"
TEMPLATES_FILE = "templates.yaml"  # optional


@dataclass(frozen=True, slots=True)
class Catalog:
    """Models, routes and templates, validated together; immutable so in-flight work keeps its view."""

    models: dict[str, ModelSpec]
    routing: RoutingPolicy
    templates: dict[str, PromptTemplate] = field(default_factory=dict)
    #: What a LiteLLM config held that does not map (each names its key); logged at load.
    warnings: tuple[str, ...] = ()


def models_source(config_dir: Path, litellm_config: Path | None = None) -> Path:
    """The file the models come from: PIPELINE_LITELLM_CONFIG when set, else the directory's
    models.yaml, else its LiteLLM `config.yaml`."""
    if litellm_config is not None:
        return Path(litellm_config)
    ours = Path(config_dir) / MODELS_FILE
    theirs = Path(config_dir) / LITELLM_FILE
    return theirs if not ours.exists() and theirs.exists() else ours


def load_catalog(config_dir: Path, litellm_config: Path | None = None) -> Catalog:
    """Load the files (templates.yaml is optional); raises ConfigError naming the file, entry and problem.

    The models come from models.yaml, or from a LiteLLM Proxy config (`litellm_config`, or
    `config.yaml` in a directory without models.yaml); then routing.yaml is optional (requests
    name their `model`, as with LiteLLM)."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise ConfigError(config_dir, "", "configuration directory not found (set PIPELINE_CONFIG_DIR)")
    source = models_source(config_dir, litellm_config)
    warnings: tuple[str, ...] = ()
    if source.name == MODELS_FILE and litellm_config is None:
        models = load_models(source)
        routing = load_routing(config_dir / ROUTING_FILE, models)
    else:
        converted = read_litellm_config(source)
        warnings = tuple(f"{source}: {w}" for w in converted.warnings)
        if litellm_config is not None and (config_dir / MODELS_FILE).exists():
            warnings += (f"{config_dir / MODELS_FILE}: not used, PIPELINE_LITELLM_CONFIG={source} is set",)
        models = parse_models(interpolate(converted.models, source, deferred=defer_secret, litellm_env=True), source)
        routing = (load_routing(config_dir / ROUTING_FILE, models) if (config_dir / ROUTING_FILE).exists()
                   else RoutingPolicy())
    templates = load_templates(config_dir / TEMPLATES_FILE)
    for warning in warnings:
        log.warning("configuration: %s", warning)
    return Catalog(models=models, routing=routing, templates=templates, warnings=warnings)


__all__ = [
    "LITELLM_FILE",
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
    "models_source",
]
