"""The idempotency guard: one answer per request id, across redeliveries, client retries and workers.

A request id is claimed with a lease before any provider call; the lease is renewed while the
request is served, and the answer (reply and usage bytes) is stored before anything is
published, so a crash in between re-sends the same bytes on redelivery instead of calling the
provider again. A claim that finds a stored answer re-publishes it (with its usage, when the
record is the very one that produced it, since that usage may not have been acknowledged).

Keys are `RequestKey(tenant, request_id)` (`request_key`): the same request id from two
tenants is two requests, never one tenant's stored answer served to the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from pipeline.contracts.models import CompletionRequest
from pipeline.state import ProcessedStore, RequestKey
from pipeline.transport.records import SourceRecord
from pipeline.worker.outcome import StoredOutcome, source_of
from pipeline.worker.outputs import Outputs

log = logging.getLogger(__name__)


def request_key(request: CompletionRequest) -> RequestKey:
    """The idempotency key of a request: its tenant (the contract's default when it names none) and id."""
    return RequestKey.of(request.request_id, request.tenant)


class IdempotencyGuard:
    def __init__(self, store: ProcessedStore, outputs: Outputs, lease_s: float) -> None:
        self.store = store
        self._out = outputs
        self._lease_s = lease_s
        self._owner_prefix = uuid.uuid4().hex[:12]

    async def claim(self, record: SourceRecord, request: CompletionRequest) -> str | None:
        """The lease owner when this task should serve the request; None when a stored answer was
        re-sent instead. Waits while another task holds the id."""
        owner = f"{self._owner_prefix}:{record.partition}:{record.offset}"
        while True:
            claim = await self.store.claim(request_key(request), owner, self._lease_s)
            if claim.reply is not None:
                stored = StoredOutcome.unpack(claim.reply)
                log.info("request %s was already answered; re-publishing the stored reply", request.request_id)
                if stored.source == source_of(record.topic, record.partition, record.offset):
                    # Our own record again: its usage may not have been acknowledged before a crash.
                    await self._out.usage(request.request_id, stored.usage)
                await self._out.reply(record, request.reply_to, request.request_id, stored.reply)
                return None
            if claim.acquired:
                return owner
            # Someone else is processing this id right now: wait for its reply or its lease to lapse.
            await asyncio.sleep(min(max(claim.retry_after_s, 0.05), 1.0))

    @contextlib.asynccontextmanager
    async def leased(self, key: RequestKey, owner: str) -> AsyncIterator[None]:
        """The lease is renewed while the block runs, and released if the block raises (so a
        redelivery may try again)."""
        done = asyncio.Event()
        renewer = asyncio.create_task(self._renew(key, owner, done))
        try:
            yield
        except BaseException:
            await self.store.release(key, owner)
            raise
        finally:
            done.set()
            renewer.cancel()

    async def _renew(self, key: RequestKey, owner: str, done: asyncio.Event) -> None:
        """Keeps the lease alive until `done` is set.

        The event, not cancellation alone, ends the loop: a Redis client can swallow a
        CancelledError that lands mid-command (redis/redis-py#2028, #2551), and a renewer that
        outlived its request kept renewing for ever and held up shutdown.
        """
        period = self._lease_s / 3
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await done.wait()
            if not done.is_set():
                await self.store.renew(key, owner, self._lease_s)
