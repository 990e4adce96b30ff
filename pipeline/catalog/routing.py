"""The routing policy (`config/routing.yaml`): which models may serve each task type."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.catalog.budgets import CostControls
from pipeline.catalog.errors import ConfigError
from pipeline.catalog.models import ModelSpec
from pipeline.catalog.yaml_loader import load_yaml_mapping


class CostPreference(StrEnum):
    """How eligible candidates are ordered: as listed, or by estimated cost and catalog quality."""

    LISTED = "listed"
    CHEAPEST = "cheapest"
    BALANCED = "balanced"
    QUALITY = "quality"


class Route(BaseModel):
    """Candidates tried in order (a fallback chain) among those eligible for the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: tuple[str, ...] = Field(min_length=1)
    capabilities: frozenset[str] = Field(default=frozenset(), description="Every candidate used must have these.")
    cost_preference: CostPreference = CostPreference.LISTED


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: dict[str, Route] = Field(default_factory=dict)
    default: Route | None = Field(default=None, description="Used for task types with no route of their own.")
    cost_controls: CostControls = Field(default_factory=CostControls)

    def route_for(self, task_type: str) -> Route | None:
        return self.routes.get(task_type, self.default)


def load_routing(file: Path, models: dict[str, ModelSpec]) -> RoutingPolicy:
    """Parse `routing.yaml` and check every candidate names a catalog model."""
    return parse_routing(load_yaml_mapping(file), file, models)


def parse_routing(raw: dict, file: Path | str, models: dict[str, ModelSpec]) -> RoutingPolicy:
    """Validate a routing.yaml mapping against the catalog; errors name `file` and the entry."""
    try:
        policy = RoutingPolicy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.from_validation(file, exc) from None
    named = [(f"routes.{task}", route) for task, route in policy.routes.items()]
    if policy.default is not None:
        named.append(("default", policy.default))
    for entry, route in named:
        for i, candidate in enumerate(route.candidates):
            if candidate not in models:
                known = ", ".join(sorted(models))
                raise ConfigError(
                    file, f"{entry}.candidates[{i}]", f"unknown model {candidate!r} (catalog has: {known})"
                )
        if route.capabilities and not any(route.capabilities <= models[c].capabilities for c in route.candidates):
            raise ConfigError(
                file, f"{entry}.capabilities",
                f"no candidate has every required capability {sorted(route.capabilities)}",
            )
    return policy
