"""Route stage: which catalog models may serve a request, in what order, and why others may not.

Eligibility is decided before any call: required capabilities, the prompt (LiteLLM's token
counter) plus the completion budget fitting the context window, the estimated cost fitting the
request's cost ceiling, and the model being enabled and not cooling down. Budgets are checked
at call time by reservation (stages/budget.py), since only a reservation is atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pipeline.catalog import Catalog, ModelSpec
from pipeline.catalog.routing import CostPreference, Route
from pipeline.contracts.models import CompletionRequest, ErrorCode, FallbackSource, RequestKind, SkipReason
from pipeline.stages.cost import per_token_prices, search_cost
from pipeline.transport.model_info import count_message_tokens, count_text_tokens
from pipeline.transport.provider import search_units

#: A failure in the chain: an attempt's error code or a candidate's skip reason.
Failure = ErrorCode | SkipReason
#: The failures a context-window fallback answers: the prompt did not fit a model before it.
CONTEXT_WINDOW_FAILURES: frozenset[Failure] = frozenset({
    SkipReason.CONTEXT_TOO_LONG, SkipReason.LARGER_CONTEXT_NEEDED, ErrorCode.CONTEXT_WINDOW_EXCEEDED})
#: The failures a content-policy fallback answers.
CONTENT_POLICY_FAILURES: frozenset[Failure] = frozenset({ErrorCode.CONTENT_POLICY})
#: The conditional fallback lists of a catalog model, with the failures that make each worth trying.
CONDITIONAL_FALLBACKS: tuple[tuple[str, frozenset[Failure]], ...] = (
    ("context_window_fallbacks", CONTEXT_WINDOW_FAILURES), ("content_policy_fallbacks", CONTENT_POLICY_FAILURES))


@dataclass(frozen=True, slots=True)
class Candidate:
    spec: ModelSpec
    prompt_tokens: int
    completion_tokens: int  # what the estimate assumes: max_tokens, else the default, times the choices (n)
    estimated_cost_usd: float
    choices: int = 1  # n: each choice is a completion of its own (they share the context window, not the tokens)
    # A conditional fallback (context_window_fallbacks, content_policy_fallbacks): tried only when one
    # of these failures happened earlier in the chain; empty: always tried.
    only_after: frozenset[Failure] = frozenset()
    skipped_before: frozenset[SkipReason] = frozenset()  # route-time skip reasons of the chain entries before it

    @property
    def tokens_per_choice(self) -> int:
        return self.completion_tokens // self.choices

    def triggered(self, failures: frozenset[Failure] | set[Failure]) -> bool:
        """Whether this candidate may be tried after `failures` (a conditional one needs one of its kind)."""
        return not self.only_after or bool(self.only_after & (set(failures) | self.skipped_before))


@dataclass(frozen=True, slots=True)
class Skipped:
    model: str
    reason: SkipReason
    detail: str = ""
    wait_s: float = 0.0  # for cooldowns and rate limits: when the model may be available again


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Eligible candidates in the order they will be tried; the first one is the primary.

    `fallbacks`: the models appended after the explicit model or the route's candidates (eligible
    or not), from the request's own `fallbacks` ("request") or the explicit model's catalog
    entry ("catalog"): its `fallbacks`, then its conditional ones (`Candidate.only_after`)."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...] = ()
    fallbacks: tuple[str, ...] = ()
    fallbacks_source: FallbackSource | None = None


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
    if request.kind is RequestKind.RERANK:
        needed.add("rerank")
    if request.tools and request.tool_choice != "none":
        needed.add("tools")
    if request.response_format is not None and request.response_format.wants_json:
        needed.add("json_mode")
    return frozenset(needed)


def count_prompt_tokens(spec: ModelSpec, request: CompletionRequest) -> int:
    """LiteLLM's tokenizer for this model (bundled, no network)."""
    if request.kind is RequestKind.EMBEDDING:
        return count_text_tokens(spec.litellm_model, list(request.input or []))
    if request.kind is RequestKind.RERANK:
        return count_text_tokens(spec.litellm_model, [request.query or "", *(request.documents or ())])
    return count_message_tokens(spec.litellm_model, [m.model_dump(exclude_none=True) for m in request.messages or ()])


def estimate(spec: ModelSpec, request: CompletionRequest, default_completion_tokens: int) -> Candidate:
    prompt = count_prompt_tokens(spec, request)
    if request.kind is RequestKind.RERANK:  # billed per search unit, not per token
        return Candidate(spec, prompt, 0, search_cost(spec, search_units(len(request.documents or ()))), 1)
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


@dataclass(frozen=True, slots=True)
class _Chain:
    """What a request may be served by, before eligibility: the route, then the fallbacks."""

    route: Route
    fallbacks: tuple[str, ...]
    source: FallbackSource | None
    conditional: tuple[tuple[str, frozenset[Failure]], ...] = ()  # the explicit model's, after `fallbacks`


def _chain(request: CompletionRequest, catalog: Catalog) -> _Chain | RouteRefusal:
    """An explicit `model` (with its catalog fallbacks) or the task's route, then the request's `fallbacks`.

    The request's `fallbacks` replace the model's configured ones, the conditional lists too (`[]`:
    none). A fallback that is already a route candidate (or an unconditional fallback) keeps that
    place and is not tried twice; one in both conditional lists is tried after either failure."""
    configured: tuple[str, ...] = ()
    spec: ModelSpec | None = None
    if request.model is not None:
        spec = catalog.models.get(request.model)
        if spec is None:
            return RouteRefusal(ErrorCode.UNKNOWN_MODEL, f"model {request.model!r} is not in the catalog")
        route = Route(candidates=(spec.name,))
        configured = spec.fallbacks
    else:
        found = catalog.routing.route_for(request.task_type)
        if found is None:
            return RouteRefusal(
                ErrorCode.NO_ROUTE, f"no route for task_type {request.task_type!r} and no default route",
            )
        route = found
    if request.fallbacks is None:
        names, source = configured, FallbackSource.CATALOG
    else:
        names, source = tuple(request.fallbacks), FallbackSource.REQUEST
        for i, name in enumerate(names):
            if name not in catalog.models:
                return RouteRefusal(ErrorCode.UNKNOWN_MODEL, f"fallbacks[{i}]: model {name!r} is not in the catalog")
    fallbacks = tuple(name for name in names if name not in route.candidates)
    conditional = _conditional(spec, (*route.candidates, *fallbacks)) if request.fallbacks is None else ()
    return _Chain(route, fallbacks, source if fallbacks or conditional else None, conditional)


def _conditional(spec: ModelSpec | None, before: tuple[str, ...]) -> tuple[tuple[str, frozenset[Failure]], ...]:
    """An explicit model's conditional fallbacks in order (context window, then content policy),
    each with the failures it answers; a name in both lists answers both."""
    if spec is None:
        return ()
    kinds: dict[str, frozenset[Failure]] = {}
    for key, failures in CONDITIONAL_FALLBACKS:
        for name in getattr(spec, key):
            if name not in before:
                kinds[name] = kinds.get(name, frozenset()) | failures
    return tuple(kinds.items())


def plan_route(
    request: CompletionRequest,
    catalog: Catalog,
    *,
    default_completion_tokens: int = 512,
    cooling_down: Callable[[str], bool] = lambda model: False,
    cost_preference: CostPreference | None = None,
) -> RoutePlan | RouteRefusal:
    """An explicit `model` skips task routing (but not eligibility); else the task's route or the default.

    The route's candidates are ordered by its cost_preference (`cost_preference` overrides it:
    `pipeline route --cost-preference` previews another order); fallbacks follow in their own
    order, under the same eligibility (capabilities, context window, cost ceiling); the explicit
    model's conditional fallbacks come last, and the call stage tries each only after a failure
    of its kind (one that nothing before it could lead to is left out)."""
    chain = _chain(request, catalog)
    if isinstance(chain, RouteRefusal):
        return chain
    route = chain.route
    ceiling = catalog.routing.cost_controls.request_ceiling(request.tenant, request.max_cost_usd)
    skipped: list[Skipped] = []
    needed = route.capabilities | required_capabilities(request)

    def eligible(names: tuple[str, ...]) -> list[Candidate]:
        found = []
        for name in names:
            candidate = _eligible(catalog.models[name], request, needed, ceiling, cooling_down,
                                  default_completion_tokens)
            if isinstance(candidate, Skipped):
                skipped.append(candidate)
            else:
                found.append(candidate)
        return found

    ordered = _order(eligible(route.candidates), cost_preference or route.cost_preference) + eligible(chain.fallbacks)
    for name, failures in chain.conditional:
        candidate = _eligible(catalog.models[name], request, needed, ceiling, cooling_down, default_completion_tokens)
        if isinstance(candidate, Skipped):
            skipped.append(candidate)
            continue
        conditional = replace(candidate, only_after=failures, skipped_before=frozenset(s.reason for s in skipped))
        if ordered or conditional.triggered(frozenset()):  # else nothing before it could fail: it is unreachable
            ordered.append(conditional)
    if ordered:
        names = (*chain.fallbacks, *(name for name, _ in chain.conditional))
        return RoutePlan(tuple(ordered), tuple(skipped), names, chain.source)
    summary = "; ".join(f"{s.model}: {s.reason.value}" + (f" ({s.detail})" if s.detail else "") for s in skipped)
    if skipped and all(s.reason is SkipReason.OVER_COST_CEILING for s in skipped):
        return RouteRefusal(ErrorCode.BUDGET_EXCEEDED, f"request cost ceiling {ceiling} USD: {summary}", tuple(skipped))
    return RouteRefusal(ErrorCode.NO_ELIGIBLE_MODEL, f"no eligible model: {summary}", tuple(skipped))


def _eligible(
    spec: ModelSpec, request: CompletionRequest, needed: frozenset[str], ceiling: float | None,
    cooling_down: Callable[[str], bool], default_completion_tokens: int,
) -> Candidate | Skipped:
    """The candidate with its estimate, or why it may not serve this request."""
    reason = _ineligible(spec, needed, cooling_down)
    if reason is not None:
        return Skipped(spec.name, *reason)
    candidate = estimate(spec, request, default_completion_tokens)
    window = spec.context_window
    if window is not None and request.kind is RequestKind.RERANK:  # each document is ranked with the query alone
        pair = _rerank_pair_tokens(spec, request)
        if pair > window:
            return Skipped(spec.name, SkipReason.CONTEXT_TOO_LONG,
                           f"query + longest document: {pair} tokens > {window}")
    elif window is not None and candidate.prompt_tokens + candidate.tokens_per_choice > window:
        return Skipped(spec.name, SkipReason.CONTEXT_TOO_LONG,
                       f"{candidate.prompt_tokens}+{candidate.tokens_per_choice} tokens > {window}")
    if ceiling is not None and candidate.estimated_cost_usd > ceiling:
        return Skipped(spec.name, SkipReason.OVER_COST_CEILING,
                       f"estimated {candidate.estimated_cost_usd:.6f} > ceiling {ceiling:.6f} USD")
    return candidate


def _rerank_pair_tokens(spec: ModelSpec, request: CompletionRequest) -> int:
    """Tokens of the query plus the longest document: what one rerank comparison must fit."""
    longest = max((count_text_tokens(spec.litellm_model, [d]) for d in request.documents or ()), default=0)
    return count_text_tokens(spec.litellm_model, [request.query or ""]) + longest


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
