"""Prometheus metrics of a worker process (one set per process, on the default registry)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from pipeline.contracts.models import CompletionReply, UsageEvent

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("llm_requests", "Requests answered, by outcome.", ["task_type", "status", "error_code"])
REQUEST_SECONDS = Histogram("llm_request_duration_seconds", "End-to-end time from intake to reply.",
                            ["task_type"], buckets=_LATENCY_BUCKETS)
PROVIDER_SECONDS = Histogram("llm_provider_latency_seconds", "One provider call.", ["model", "provider"],
                             buckets=_LATENCY_BUCKETS)
ATTEMPTS = Counter("llm_attempts", "Provider calls, by model, the provider of the deployment called, and outcome.",
                   ["model", "provider", "outcome", "error_code"])
RETRIES = Counter("llm_retries", "Calls that repeated a call to the same model.", ["model"])
FALLBACKS = Counter("llm_fallbacks", "Calls to a model other than the request's first choice.", ["model"])
TOKENS = Counter("llm_tokens", "Tokens used, by model, tenant and kind (prompt, completion).",
                 ["model", "tenant", "kind"])
COST = Counter("llm_cost_usd", "Provider cost in USD, by model, provider (of the deployment) and tenant.",
               ["model", "provider", "tenant"])
BUDGET_REMAINING = Gauge("llm_budget_remaining_usd", "Remaining budget (limit minus spent and reserved).",
                         ["budget", "period"])
IN_FLIGHT = Gauge("llm_in_flight_requests", "Requests being processed by this worker.")
CONSUMER_LAG = Gauge("llm_consumer_lag", "Records behind the end of each assigned partition.",
                     ["group", "topic", "partition"])
DEAD_LETTERS = Counter("llm_dead_letters", "Records sent to a dead-letter topic.", ["topic", "reason"])
PUBLISH_REFUSED = Counter("llm_publish_refused", "Records a topic refused for good (too large, invalid or "
                          "forbidden topic), by what they were.", ["kind", "reason"])
RECORDS_SKIPPED = Counter("llm_records_skipped", "Records that could be neither handled nor dead-lettered: "
                          "logged with their offset and skipped so the partition moves on.", ["topic", "reason"])
STREAM_EVENTS_SKIPPED = Counter("llm_stream_events_skipped", "Undecodable events dropped from provider streams "
                                "(the rest of the answer still used), by deployment.", ["deployment"])
USAGE_ROWS = Counter("llm_usage_rows_written", "Usage rows inserted into ClickHouse.")
USAGE_INSERT_FAILURES = Counter("llm_usage_insert_failures", "Failed usage inserts (retried, never dropped).")
CONFIG_RELOADS = Counter("llm_config_reloads", "Configuration reloads.", ["result"])


def observe_attempts(events: Sequence[UsageEvent]) -> None:
    """Attempts, retries, fallbacks, tokens and cost, from the usage events of one request round."""
    previous = None
    for e in events:
        ATTEMPTS.labels(e.model, e.provider, e.status.value, e.error_code.value if e.error_code else "").inc()
        PROVIDER_SECONDS.labels(e.model, e.provider).observe(e.latency_ms / 1000)
        if previous is not None and previous == e.model:
            RETRIES.labels(e.model).inc()
        if e.is_fallback:
            FALLBACKS.labels(e.model).inc()
        if e.prompt_tokens:
            TOKENS.labels(e.model, e.tenant, "prompt").inc(e.prompt_tokens)
        if e.completion_tokens:
            TOKENS.labels(e.model, e.tenant, "completion").inc(e.completion_tokens)
        if e.cost_usd:
            COST.labels(e.model, e.provider, e.tenant).inc(e.cost_usd)
        previous = e.model


def observe_reply(task_type: str, reply: CompletionReply, seconds: float) -> None:
    error = reply.error.code.value if reply.error else ""
    REQUESTS.labels(task_type or "-", reply.status.value, error).inc()
    if seconds:
        REQUEST_SECONDS.labels(task_type or "-").observe(seconds)
