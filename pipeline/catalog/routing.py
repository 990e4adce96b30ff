"""The routing policy (`config/routing.yaml`): which models may serve each task type."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.models import ModelSpec
from pipeline.catalog.yaml_loader import load_yaml_mapping


class Route(BaseModel):
    """Ordered candidates: the first that answers wins (a fallback chain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: tuple[str, ...] = Field(min_length=1)


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: dict[str, Route] = Field(default_factory=dict)
    default: Route | None = Field(default=None, description="Used for task types with no route of their own.")

    def route_for(self, task_type: str) -> Route | None:
        return self.routes.get(task_type, self.default)


def load_routing(file: Path, models: dict[str, ModelSpec]) -> RoutingPolicy:
    """Parse `routing.yaml` and check every candidate names a catalog model."""
    raw = load_yaml_mapping(file)
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
    return policy
