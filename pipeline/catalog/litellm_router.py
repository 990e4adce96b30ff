"""A LiteLLM config's `router_settings` and `litellm_settings`, mapped onto our resilience settings.

What maps becomes `defaults:` (every model's resilience), per-model `resilience:` and per-model
`fallbacks`, `context_window_fallbacks` and `content_policy_fallbacks`; what does not is
reported by name (`Notes.warn`), or refused (`ConfigError`) where ignoring it would change how
calls are made. Values are never quoted in a message: a setting may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog.errors import ConfigError
from pipeline.catalog.resilience import Resilience

#: routing_strategy -> our load_balancing (None: no equivalent, weighted with a warning).
STRATEGIES: dict[str, str | None] = {
    "simple-shuffle": "weighted",
    "least-busy": "least_busy",
    "latency-based-routing": "latency",
    "usage-based-routing": None,
    "usage-based-routing-v2": None,
    "cost-based-routing": None,
}

#: LiteLLM RetryPolicy fields -> our retry error classes (empty: never retried here, by design).
RETRY_POLICY: dict[str, tuple[str, ...]] = {
    "RateLimitErrorRetries": ("rate_limited",),
    "InternalServerErrorRetries": ("server_error", "connection_error"),
    "ServiceUnavailableErrorRetries": ("server_error",),
    "TimeoutErrorRetries": ("timeout",),
    "BadRequestErrorRetries": (),
    "AuthenticationErrorRetries": (),
    "ContentPolicyViolationErrorRetries": (),
    "NotFoundErrorRetries": (),
}
#: Why the classes above with no mapping are not retried.
_NOT_RETRIED = {
    "BadRequestErrorRetries": "a bad request fails the same way again: it is never retried",
    "AuthenticationErrorRetries": "an auth error falls back to the next model at once",
    "ContentPolicyViolationErrorRetries": "a content-policy refusal falls back (resilience.content_policy)",
    "NotFoundErrorRetries": "an unknown model falls back at once",
}
#: num_retries applies to these (LiteLLM retries every retryable error).
_NUM_RETRIES_CLASSES = ("rate_limited", "server_error", "connection_error", "malformed_response", "timeout")

#: Settings whose job the pipeline does its own way: named in a warning with what to use instead.
_ELSEWHERE = {
    "redis_host": "shared state (cooldowns, limits, budgets) uses REDIS_URL",
    "redis_port": "shared state uses REDIS_URL",
    "redis_password": "shared state uses REDIS_URL / REDIS_PASSWORD",
    "redis_url": "shared state uses REDIS_URL",
    "cache": "the response cache is PIPELINE_RESPONSE_CACHE",
    "cache_params": "the response cache is PIPELINE_RESPONSE_CACHE",
    "cache_responses": "the response cache is PIPELINE_RESPONSE_CACHE",
    "success_callback": "usage rows and metrics are the pipeline's own",
    "failure_callback": "usage rows and metrics are the pipeline's own",
    "callbacks": "usage rows and metrics are the pipeline's own",
    "service_callback": "usage rows and metrics are the pipeline's own",
    "set_verbose": "logging is PIPELINE_LOG_LEVEL",
    "json_logs": "logging is PIPELINE_LOG_FORMAT",
    "provider_budget_config": "spend limits are routing.yaml cost_controls",
    "max_budget": "spend limits are routing.yaml cost_controls",
    "model_group_alias": "name the model in routing.yaml, or add a catalog entry under the alias",
    "max_fallbacks": "a model's fallbacks list is its limit",
    "allowed_fails_policy": "allowed_fails applies to every error class that counts towards a cooldown",
    "retry_after": "backoff is per error class (resilience.retry base_delay_s/max_delay_s)",
    "default_litellm_params": "set litellm_params on each model",
}
#: The fallback lists LiteLLM tries only for their kind of failure (same-named catalog fields).
_NARROW = ("context_window_fallbacks", "content_policy_fallbacks")
#: Accepted without effect: the pipeline always behaves this way.
_BUILT_IN = {"enable_pre_call_checks", "suppress_debug_info"}


@dataclass(slots=True)
class Notes:
    """Warnings collected while converting, in order, each naming the key it is about."""

    file: str
    warnings: list[str] = field(default_factory=list)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")


@dataclass(slots=True)
class RouterMapping:
    """What the settings sections became: `defaults:`, per-model resilience overrides, fallbacks."""

    defaults: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    default_fallbacks: list[str] = field(default_factory=list)
    drop_params: bool = False
    narrow: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # by key (_NARROW), then model

    def fallbacks_for(self, model: str) -> dict[str, list[str]]:
        """The catalog fallback fields of one model: its own lists (`fallbacks`: else the wildcard's), never itself."""
        lists = {"fallbacks": self.fallbacks.get(model) or self.default_fallbacks}
        lists.update({key: self.narrow.get(key, {}).get(model, []) for key in _NARROW})
        return {key: [f for f in names if f != model] for key, names in lists.items() if names}


def map_settings(router: dict[str, Any], litellm: dict[str, Any], model_names: list[str],
                 notes: Notes) -> RouterMapping:
    """Map both sections; router_settings wins where both set the same thing (as in LiteLLM's proxy)."""
    out = RouterMapping()
    for section, values in (("litellm_settings", litellm), ("router_settings", router)):
        # num_retries first: retry_policy refines it, wherever it stands in the file.
        for key, value in sorted(values.items(), key=lambda kv: kv[0] != "num_retries"):
            _one(section, str(key), value, out, model_names, notes)
    return out


def _one(section: str, key: str, value: Any, out: RouterMapping, names: list[str], notes: Notes) -> None:
    where = f"{section}.{key}"
    if _resilience(where, key, value, out, names, notes):
        return
    if key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        _fallbacks(where, key, value, out, names, notes)
    elif key == "default_fallbacks":
        out.default_fallbacks = _names(notes.file, where, value, names)
    elif key == "drop_params":
        out.drop_params = bool(value)
    elif key in _ELSEWHERE:
        notes.warn(where, f"not supported: {_ELSEWHERE[key]}")
    elif key not in _BUILT_IN:
        notes.warn(where, "not supported, ignored")


def _resilience(where: str, key: str, value: Any, out: RouterMapping, names: list[str], notes: Notes) -> bool:
    """Settings that become resilience fields; False when `key` is not one of them."""
    if key == "num_retries":
        n = _count(notes.file, where, value)
        out.defaults["retry"] = {**out.defaults.get("retry", {}), **{c: _rule(c, n) for c in _NUM_RETRIES_CLASSES}}
        if n:
            out.defaults["retry_timeouts"] = True
    elif key == "retry_policy":
        out.defaults.update(_retry_policy(where, value, notes, out.defaults))
    elif key == "model_group_retry_policy":
        for model, policy in _mapping(notes.file, where, value).items():
            _known(notes.file, f"{where}.{model}", model, names)
            base = out.per_model.setdefault(model, {})
            base.update(_retry_policy(f"{where}.{model}", policy, notes, base))
    elif key in ("timeout", "request_timeout"):
        out.defaults["timeout_s"] = _positive(notes.file, where, value)
    elif key == "stream_timeout":
        out.defaults["first_token_timeout_s"] = _positive(notes.file, where, value)
    elif key == "allowed_fails":
        # LiteLLM cools a deployment down once its failures exceed allowed_fails; ours counts the failure that does.
        out.defaults["allowed_fails"] = _count(notes.file, where, value) + 1
    elif key == "cooldown_time":
        seconds = _positive(notes.file, where, value, allow_zero=True)
        out.defaults["cooldown_s"] = seconds
        if seconds:
            out.defaults["fail_window_s"] = seconds  # LiteLLM counts failures over the cooldown time
    elif key == "disable_cooldowns":
        if value:
            out.defaults.update(cooldown_s=0.0, quota_cooldown_s=0.0)
    elif key == "routing_strategy":
        out.defaults["load_balancing"] = _strategy(where, value, notes)
    elif key == "routing_strategy_args":
        notes.warn(where, "ignored: latency balancing uses a moving average of observed latency")
    else:
        return False
    return True


def _retry_policy(where: str, value: Any, notes: Notes, base: dict[str, Any]) -> dict[str, Any]:
    retry = dict(base.get("retry", {}))
    update: dict[str, Any] = {}
    for name, count in _mapping(notes.file, where, value).items():
        if count is None:
            continue
        if name == "DefaultRetries":
            n = _count(notes.file, f"{where}.{name}", count)
            retry.update({c: _rule(c, n) for c in _NUM_RETRIES_CLASSES if c not in retry})
            continue
        if name not in RETRY_POLICY:
            notes.warn(f"{where}.{name}", "unknown retry class, ignored")
            continue
        n = _count(notes.file, f"{where}.{name}", count)
        if not RETRY_POLICY[name]:
            if n:
                notes.warn(f"{where}.{name}", f"not supported: {_NOT_RETRIED[name]}")
            continue
        retry.update({c: _rule(c, n) for c in RETRY_POLICY[name]})
        if name == "TimeoutErrorRetries":
            update["retry_timeouts"] = n > 0
    return {**update, "retry": retry} if retry else update


def _rule(error_class: str, retries: int) -> dict[str, Any]:
    """Our rule for the class with LiteLLM's retry count (our backoff delays kept)."""
    return {**Resilience().rule(error_class).model_dump(), "retries": retries}


def _fallbacks(where: str, key: str, value: Any, out: RouterMapping, names: list[str], notes: Notes) -> None:
    """`[{"gpt-4o": ["claude"]}]` -> that model's catalog field of the same name (`fallbacks`,
    `context_window_fallbacks` or `content_policy_fallbacks`); `"*"` in `fallbacks`: every model
    without its own (LiteLLM reads no wildcard in the other two, so neither do we: it is warned)."""
    if not isinstance(value, list):
        raise ConfigError(notes.file, where, "expected a list of {model_name: [fallback, ...]}")
    per_model = out.fallbacks if key == "fallbacks" else out.narrow.setdefault(key, {})
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ConfigError(notes.file, f"{where}[{i}]", "expected {model_name: [fallback, ...]}")
        for model, targets in entry.items():
            if model == "*" and key != "fallbacks":
                notes.warn(f"{where}[{i}].*", "ignored: LiteLLM applies a wildcard only in fallbacks; name each model")
                continue
            if model == "*":  # LiteLLM's wildcard: every model without its own
                out.default_fallbacks = _names(notes.file, f"{where}[{i}].*", targets, names)
                continue
            _known(notes.file, f"{where}[{i}]", str(model), names)
            chain = per_model.setdefault(str(model), [])
            chain.extend(t for t in _names(notes.file, f"{where}[{i}].{model}", targets, names)
                         if t not in chain and t != model)


def _strategy(where: str, value: Any, notes: Notes) -> str:
    if value not in STRATEGIES:
        raise ConfigError(notes.file, where, f"unknown routing_strategy (known: {', '.join(STRATEGIES)})")
    ours = STRATEGIES[value]
    if ours is None:
        notes.warn(where, f"{value} has no equivalent: weighted balancing is used (rpm/tpm limits still apply)")
        return "weighted"
    return ours


def _mapping(file: str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(file, where, "expected a mapping")
    return value


def _count(file: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
        raise ConfigError(file, where, "expected a whole number from 0 to 20")
    return value


def _positive(file: str, where: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(file, where, "expected a positive number of seconds")
    return float(value)


def _known(file: str, where: str, model: str, names: list[str]) -> None:
    if model not in names:
        raise ConfigError(file, where, f"unknown model_name {model!r} (model_list has: {', '.join(names)})")


def _names(file: str, where: str, value: Any, names: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(file, where, "expected a list of model_name")
    for target in value:
        _known(file, where, target, names)
    return list(value)
