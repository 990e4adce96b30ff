"""Optional OpenTelemetry tracing: a span per request and per provider attempt.

Enabled when the `tracing` extra is installed and PIPELINE_TRACING=true. Trace context comes in
on the request's Kafka headers (W3C `traceparent`/`tracestate`) and goes out on the reply and
usage records, so a workflow engine's trace continues through the pipeline. Without the extra
every function here is a cheap no-op. Exporting (OTLP, console, ...) is configured the standard
OpenTelemetry way, e.g. by the application that installs a TracerProvider, or by
`opentelemetry-instrument`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

_tracer: Any = None


def enable() -> bool:
    """Turn tracing on if OpenTelemetry is importable; returns whether it is on."""
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    _tracer = trace.get_tracer("llm-pipeline")
    return True


def disable() -> None:
    global _tracer
    _tracer = None


def _extract(headers: Mapping[str, bytes]) -> Any:
    from opentelemetry.propagate import extract

    return extract({k: v.decode("latin-1") for k, v in headers.items()})


@contextlib.contextmanager
def request_span(headers: Mapping[str, bytes], attributes: dict[str, Any]) -> Iterator[None]:
    """The span of one request, a child of the producer's trace when its headers carry one."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span("llm.request", context=_extract(headers), attributes=attributes):
        yield


@contextlib.contextmanager
def attempt_span(attributes: dict[str, Any]) -> Iterator[Any]:
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span("llm.provider_call", attributes=attributes) as span:
        yield span


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing record headers."""
    if _tracer is not None:
        from opentelemetry.propagate import inject as otel_inject

        otel_inject(headers)
    return headers
