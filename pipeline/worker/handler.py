"""One record through the pipeline: validate -> authenticate -> (claim) -> stages -> store -> publish.

The handler only orchestrates: `stages/validate.py` judges the bytes, `TenantGate`
(`tenant_auth.py`) decides which tenant the record may act for, `IdempotencyGuard`
(`idempotency.py`) makes one answer per request id, `StagePipeline` (`serve.py`) routes and
calls, `Outputs` (`outputs.py`) writes replies, usage, alerts and dead letters so that none can
hold the partition. Transport-free: it receives a `SourceRecord` and writes through a
`Publisher`, so it is tested without Kafka and driven by any consumer loop.

Which loop owns which failure:
- the intake (`transport/kafka_intake.py`) retries Kafka and Redis outages for ever, holding the
  partition, and any other exception `poison_max_attempts` times, then calls `give_up`;
- `_serve_with_retries` here retries a request whose stages raised (a bug), with backoff, then
  dead-letters it; never once the provider has answered (`FailedAfterCalls`), and never after
  the answer is stored (a redelivery re-sends the stored bytes);
- `stages/call.py` retries a provider error per error class, then falls back (`stages/retry.py`);
- `StagePipeline._call` goes round the candidates again when all are rate-limited or cooling down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pipeline.catalog import Catalog
from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.observability import metrics, tracing
from pipeline.settings import Settings
from pipeline.stages.budget import BudgetGuard
from pipeline.stages.call import AnswerCache
from pipeline.stages.deployments import DeploymentPool
from pipeline.stages.reply import error_reply
from pipeline.stages.validate import Rejection
from pipeline.state import ProcessedStore
from pipeline.state.processed import InProcessStore
from pipeline.transport.provider import ProviderClient
from pipeline.transport.records import Publisher, SourceRecord
from pipeline.worker.idempotency import IdempotencyGuard, request_key
from pipeline.worker.outcome import StoredOutcome, source_of
from pipeline.worker.outputs import Outputs, encode_usage
from pipeline.worker.serve import FailedAfterCalls, Served, StagePipeline
from pipeline.worker.tenant_auth import TenantGate

log = logging.getLogger(__name__)


class RequestHandler:
    """Runs one record through the pipeline and publishes everything it produces."""

    def __init__(
        self,
        settings: Settings,
        catalog: Callable[[], Catalog],
        provider: ProviderClient,
        publisher: Publisher,
        processed: ProcessedStore | None = None,
        budget: BudgetGuard | None = None,
        pool: DeploymentPool | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self._settings = settings
        self._out = Outputs(settings, publisher)
        store = processed if processed is not None else InProcessStore()  # one path: always a store
        self._guard = IdempotencyGuard(store, self._out, settings.idempotency_lease_s)
        self._stages = StagePipeline(settings, catalog, provider, publisher, self._out, budget, pool, cache)
        self._tenants = TenantGate(settings)  # PIPELINE_TENANT_AUTH (worker/tenant_auth.py)

    async def handle(self, record: SourceRecord) -> None:
        """Never raises for bad input or provider failure: those become replies and DLQ records."""
        with tracing.request_span(record.headers, {"messaging.kafka.partition": record.partition,
                                                   "messaging.kafka.offset": record.offset}):
            await self._handle(record)

    async def _handle(self, record: SourceRecord) -> None:
        started = time.perf_counter()
        checked = self._tenants.check(record)  # validated, then authenticated: before any claim or cost
        if isinstance(checked, Rejection):
            await self._reject(record, checked)
            return
        owner = await self._guard.claim(record, checked)
        if owner is None:
            return  # answered before: the stored answer was re-sent
        async with self._guard.leased(request_key(checked), owner):
            served = await self._serve_with_retries(record, checked, started)
            stored = StoredOutcome(self._out.encode_reply(served.reply), tuple(encode_usage(e) for e in served.usage),
                                   source_of(record.topic, record.partition, record.offset))
            try:
                # Stored before anything is published: a crash in between re-sends these same bytes
                # on redelivery (see pipeline/worker/outcome.py).
                await self._guard.store.complete(request_key(checked), owner, stored.pack())
            except BaseException:
                await self._stages.publish_usage(checked, served.usage)  # the calls happened: record them
                raise
        await asyncio.gather(
            self._out.usage(checked.request_id, stored.usage),
            self._out.reply(record, checked.reply_to, checked.request_id, stored.reply),
        )
        metrics.observe_attempts(served.usage)
        metrics.observe_reply(checked.task_type, served.reply, time.perf_counter() - started)

    async def _serve_with_retries(self, record: SourceRecord, request: CompletionRequest, started: float) -> Served:
        """A request whose handling raises is retried with backoff, then dead-lettered (error reply)."""
        attempts = self._settings.poison_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._stages.serve(record, request, started)
            except FailedAfterCalls as exc:  # the provider answered: a retry would pay again
                log.exception("request %s failed after its provider calls; dead-lettering it", request.request_id)
                return await self._dead_letter_failed(record, request, exc, attempt)
            except Exception as exc:
                log.exception("request %s failed unexpectedly (attempt %d of %d)", request.request_id, attempt,
                              attempts)
                if attempt < attempts:
                    await asyncio.sleep(self._settings.poison_backoff_s * 2 ** (attempt - 1))
                    continue
                return await self._dead_letter_failed(record, request, exc, attempts)
        raise AssertionError("unreachable")


    async def _dead_letter_failed(self, record: SourceRecord, request: CompletionRequest, exc: BaseException,
                                  attempts: int) -> Served:
        await self._out.dead_letter(record, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}",
                                    request.request_id, attempts=attempts)
        return Served(error_reply(request.request_id, ErrorCode.INTERNAL_ERROR,
                                  f"internal error after {attempts} attempts; the request was dead-lettered",
                                  metadata=request.metadata))

    async def give_up(self, record: SourceRecord, exc: BaseException, attempts: int) -> None:
        """The intake stopped retrying a record whose handling kept raising: dead letter, and an
        error reply when its request_id can be read."""
        checked = self._tenants.check(record)  # an unauthenticated record's reply_to is not obeyed
        request_id = checked.request_id if isinstance(checked, (CompletionRequest, Rejection)) else None
        detail = f"{type(exc).__name__}: {exc}"
        await self._out.dead_letter(record, ErrorCode.INTERNAL_ERROR, detail, request_id, attempts=attempts)
        if request_id is not None:
            reply_to = checked.reply_to
            reply = error_reply(request_id, ErrorCode.INTERNAL_ERROR,
                                f"internal error after {attempts} attempts; the request was dead-lettered")
            await self._out.reply(record, reply_to, request_id, self._out.encode_reply(reply))

    async def undecodable(self, topic: str, partition: int, offset: int, exc: BaseException) -> None:
        """A record the Kafka client cannot decode (e.g. a header key that is not UTF-8): its bytes
        cannot be read, so the dead letter carries its position and the reason, not its value."""
        record = SourceRecord(topic=topic, partition=partition, offset=offset, value=None)
        await self._out.dead_letter(record, ErrorCode.UNDECODABLE_RECORD, f"{type(exc).__name__}: {exc}", None,
                                    value_omitted="the Kafka client could not decode the record")

    async def _reject(self, record: SourceRecord, rejection: Rejection) -> None:
        log.warning(
            "rejected record %s[%d]@%d: %s: %s",
            record.topic, record.partition, record.offset, rejection.code.value, rejection.detail,
        )
        if rejection.dead_letter:
            await self._out.dead_letter(record, rejection.code, rejection.detail, rejection.request_id)
        if rejection.request_id is not None:
            reply = error_reply(rejection.request_id, rejection.code, rejection.detail, metadata=rejection.metadata)
            await self._out.reply(record, rejection.reply_to, reply.request_id, self._out.encode_reply(reply))
            metrics.observe_reply("", reply, 0.0)
