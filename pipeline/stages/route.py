"""Route stage: pick the ordered candidate models that may serve a request."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.catalog import Catalog, ModelSpec
from pipeline.contracts import CompletionRequest, ErrorCode


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Candidates in the order they will be tried; the first one is the primary."""

    candidates: tuple[ModelSpec, ...]


@dataclass(frozen=True, slots=True)
class RouteRefusal:
    code: ErrorCode
    detail: str


def plan_route(request: CompletionRequest, catalog: Catalog) -> RoutePlan | RouteRefusal:
    """An explicit `model` skips task routing; otherwise the task type's route (or the default)."""
    if request.model is not None:
        spec = catalog.models.get(request.model)
        if spec is None:
            return RouteRefusal(ErrorCode.UNKNOWN_MODEL, f"model {request.model!r} is not in the catalog")
        if spec.disabled:
            return RouteRefusal(ErrorCode.UNKNOWN_MODEL, f"model {request.model!r} is disabled")
        return RoutePlan((spec,))
    route = catalog.routing.route_for(request.task_type)
    if route is None:
        return RouteRefusal(
            ErrorCode.NO_ROUTE, f"no route for task_type {request.task_type!r} and no default route"
        )
    candidates = tuple(catalog.models[name] for name in route.candidates if not catalog.models[name].disabled)
    if not candidates:
        return RouteRefusal(ErrorCode.NO_ROUTE, f"every candidate for task_type {request.task_type!r} is disabled")
    return RoutePlan(candidates)
