"""Route stage: which catalog models may serve a request, in what order, and why others may not.

Eligibility is decided before any call: required capabilities, the prompt (LiteLLM's token
counter) plus the completion budget fitting the context window, the estimated cost fitting the
request's cost ceiling, and the model being enabled and not cooling down. Budgets are checked
at call time by reservation (stages/budget.py), since only a reservation is atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.catalog import Catalog, ModelSpec
from pipeline.catalog.routing import CostPreference, Route
from pipeline.contracts.models import CompletionRequest, ErrorCode, RequestKind, SkipReason
from pipeline.stages.cost import per_token_prices
from pipeline.transport.model_info import count_message_tokens, count_text_tokens


@dataclass(frozen=True, slots=True)
class Candidate:
    spec: ModelSpec
    prompt_tokens: int
    completion_tokens: int  # what the estimate assumes: max_tokens, else the default, times the choices (n)
    estimated_cost_usd: float
    choices: int = 1  # n: each choice is a completion of its own (they share the context window, not the tokens)

    @property
    def tokens_per_choice(self) -> int:
        return self.completion_tokens // self.choices


@dataclass(frozen=True, slots=True)
class Skipped:
    model: str
    reason: SkipReason
    detail: str = ""
    wait_s: float = 0.0  # for cooldowns and rate limits: when the model may be available again


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Eligible candidates in the order they will be tried; the first one is the primary."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteRefusal:
    code: ErrorCode
    detail: str
    skipped: tuple[Skipped, ...] = ()


def required_capabilities(request: CompletionRequest) -> frozenset[str]:
    """What the request itself demands of a model, on top of its route's capabilities."""
    needed = set()
    if request.kind is RequestKind.EMBEDDING:
        needed.add("embeddings")
    if request.tools and request.tool_choice != "none":
        needed.add("tools")
    if request.response_format is not None and request.response_format.wants_json:
        needed.add("json_mode")
    return frozenset(needed)


def count_prompt_tokens(spec: ModelSpec, request: CompletionRequest) -> int:
    """LiteLLM's tokenizer for this model (bundled, no network)."""
    if request.kind is RequestKind.EMBEDDING:
        return count_text_tokens(spec.litellm_model, list(request.input or []))
    return count_message_tokens(spec.litellm_model, [m.model_dump(exclude_none=True) for m in request.messages or ()])


def estimate(spec: ModelSpec, request: CompletionRequest, default_completion_tokens: int) -> Candidate:
    prompt = count_prompt_tokens(spec, request)
    choices = request.n or 1
    per_choice = request.max_tokens or default_completion_tokens
    completion = 0 if request.kind is RequestKind.EMBEDDING else per_choice * choices
    inp, out = per_token_prices(spec)
    return Candidate(spec, prompt, completion, prompt * inp + completion * out, choices)


def _order(candidates: list[Candidate], preference: CostPreference) -> list[Candidate]:
    if preference is CostPreference.CHEAPEST:
        return sorted(candidates, key=lambda c: c.estimated_cost_usd)
    if preference is CostPreference.QUALITY:
        return sorted(candidates, key=lambda c: -c.spec.quality)
    if preference is CostPreference.BALANCED:
        return sorted(candidates, key=lambda c: c.estimated_cost_usd / c.spec.quality)
    return candidates


def plan_route(
    request: CompletionRequest,
    catalog: Catalog,
    *,
    default_completion_tokens: int = 512,
    cooling_down: Callable[[str], bool] = lambda model: False,
) -> RoutePlan | RouteRefusal:
    """An explicit `model` skips task routing (but not eligibility); else the task's route or the default."""
    if request.model is not None:
        spec = catalog.models.get(request.model)
        if spec is None:
            return RouteRefusal(ErrorCode.UNKNOWN_MODEL, f"model {request.model!r} is not in the catalog")
        route = Route(candidates=(spec.name,))
    else:
        found = catalog.routing.route_for(request.task_type)
        if found is None:
            return RouteRefusal(
                ErrorCode.NO_ROUTE, f"no route for task_type {request.task_type!r} and no default route",
            )
        route = found
    ceiling = catalog.routing.cost_controls.request_ceiling(request.tenant, request.max_cost_usd)
    eligible: list[Candidate] = []
    skipped: list[Skipped] = []
    needed = route.capabilities | required_capabilities(request)
    for name in route.candidates:
        spec = catalog.models[name]
        reason = _ineligible(spec, needed, cooling_down)
        if reason is not None:
            skipped.append(Skipped(name, *reason))
            continue
        candidate = estimate(spec, request, default_completion_tokens)
        window = spec.context_window
        if window is not None and candidate.prompt_tokens + candidate.tokens_per_choice > window:
            skipped.append(Skipped(name, SkipReason.CONTEXT_TOO_LONG,
                                   f"{candidate.prompt_tokens}+{candidate.tokens_per_choice} tokens > {window}"))
            continue
        if ceiling is not None and candidate.estimated_cost_usd > ceiling:
            skipped.append(Skipped(name, SkipReason.OVER_COST_CEILING,
                                   f"estimated {candidate.estimated_cost_usd:.6f} > ceiling {ceiling:.6f} USD"))
            continue
        eligible.append(candidate)
    if eligible:
        return RoutePlan(tuple(_order(eligible, route.cost_preference)), tuple(skipped))
    summary = "; ".join(f"{s.model}: {s.reason.value}" + (f" ({s.detail})" if s.detail else "") for s in skipped)
    if skipped and all(s.reason is SkipReason.OVER_COST_CEILING for s in skipped):
        return RouteRefusal(ErrorCode.BUDGET_EXCEEDED, f"request cost ceiling {ceiling} USD: {summary}", tuple(skipped))
    return RouteRefusal(ErrorCode.NO_ELIGIBLE_MODEL, f"no eligible model: {summary}", tuple(skipped))


def _ineligible(
    spec: ModelSpec, needed: frozenset[str], cooling_down: Callable[[str], bool]
) -> tuple[SkipReason, str] | None:
    if spec.disabled:
        return SkipReason.DISABLED, ""
    missing = needed - spec.capabilities
    if missing:
        return SkipReason.MISSING_CAPABILITY, ",".join(sorted(missing))
    if cooling_down(spec.name):
        return SkipReason.COOLING_DOWN, ""
    return None
