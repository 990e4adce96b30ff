"""OpenTelemetry (optional extra): spans per request and attempt, context carried in Kafka headers."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.observability import tracing
from tests.integration.kafka_helpers import encode, eventually, header, read_topic, request_doc

pytestmark = pytest.mark.kafka
otel = pytest.importorskip("opentelemetry.sdk.trace", reason="install llm-pipeline[tracing]")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; later calls are ignored with a warning
    current = trace.get_tracer_provider()
    if current is not provider:  # set by an earlier test: attach our exporter to it
        current.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.disable()


async def test_spans_continue_the_producers_trace(settings, start_worker, sim, spans) -> None:
    await start_worker(tracing=True)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_requests, encode(request_doc("traced")), key=b"k",
                                     headers=[("traceparent", PARENT.encode())])
    finally:
        await producer.stop()
    (reply,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)

    async def both_spans_ended() -> dict | None:  # the request's span ends just after its reply is out
        finished = {s.name: s for s in spans.get_finished_spans()}
        return finished if {"llm.request", "llm.provider_call"} <= finished.keys() else None

    finished = await eventually(both_spans_ended, timeout_s=10)
    request_span, call_span = finished["llm.request"], finished["llm.provider_call"]
    assert format(request_span.context.trace_id, "032x") == TRACE_ID  # continues the producer's trace
    assert call_span.parent.span_id == request_span.context.span_id
    assert call_span.attributes["llm.model"] == "sim-gpt-4o-mini"
    outgoing = header(reply, "traceparent")
    assert outgoing is not None and outgoing.split("-")[1] == TRACE_ID  # passed on to the reply
