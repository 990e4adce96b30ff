"""Tenant authentication in the worker: the key directory, and the gate every record passes
after validation and before its idempotency claim (the decision is `stages/authenticate.py`).

A record that may not act for its tenant becomes an `unauthenticated` rejection: dead-lettered,
with an error reply on the default reply topic (never its own `reply_to`, which nobody vouched
for); no claim, no budget, no provider call, no alert.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.settings import Settings
from pipeline.stages.authenticate import Refused, TenantAuthenticator, TenantTopics, key_name_problem
from pipeline.stages.validate import Rejection, validate_request
from pipeline.transport.records import SourceRecord

log = logging.getLogger(__name__)


class TenantKeyDirectory:
    """`KeyLookup` over a directory with one file per tenant (a mounted Kubernetes secret): the
    file's non-empty lines, stripped, are the tenant's accepted keys. Read when a record is
    verified, reused for `ttl_s` at most, so a rewritten (rotated) or removed file takes effect
    without a restart."""

    def __init__(self, directory: Path, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[bytes, ...] | None]] = {}

    def __call__(self, tenant: str) -> Sequence[bytes] | None:
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        keys = self._read(tenant)
        if len(self._cache) > 10_000:  # unknown names from a flood of forged records: start over
            self._cache.clear()
        self._cache[tenant] = (now, keys)
        return keys

    def _read(self, tenant: str) -> tuple[bytes, ...] | None:
        if key_name_problem(tenant) is not None:
            return None
        try:
            text = (self.directory / tenant).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable: refuse the tenant's records rather than hold the partition
            log.error("cannot read the signing key of tenant %r in %s: %s", tenant, self.directory, exc)
            return None
        keys = tuple(line.strip() for line in text.splitlines() if line.strip())
        return keys or None


def _authenticator(settings: Settings) -> TenantAuthenticator:
    if settings.tenant_auth == "signature":
        if settings.tenant_keys_dir is None:
            raise ValueError("PIPELINE_TENANT_AUTH=signature needs PIPELINE_TENANT_KEYS_DIR")
        return TenantAuthenticator("signature", keys=TenantKeyDirectory(settings.tenant_keys_dir,
                                                                         settings.tenant_keys_cache_s))
    if settings.tenant_auth == "topic":
        return TenantAuthenticator("topic", topics=tenant_topics(settings))
    return TenantAuthenticator("field")


def tenant_topics(settings: Settings) -> TenantTopics:
    """The per-tenant request topics; ValueError if the pattern is invalid or would read one of the
    worker's own topics (say its dead-letter topic) as a tenant's."""
    topics = TenantTopics(settings.tenant_topic_pattern)
    topics.check_own_topics([settings.topic_requests, settings.topic_replies, settings.topic_usage,
                             settings.topic_dlq, settings.topic_usage_dlq, settings.topic_alerts])
    return topics


def request_subscription(settings: Settings) -> str | None:
    """The topic pattern the intake subscribes to (topic mode), else None (the requests topic)."""
    return tenant_topics(settings).subscription if settings.tenant_auth == "topic" else None


class TenantGate:
    """Applies `PIPELINE_TENANT_AUTH` to one record's validation outcome."""

    def __init__(self, settings: Settings, authenticator: TenantAuthenticator | None = None) -> None:
        self._settings = settings
        self.auth = authenticator or _authenticator(settings)

    def check(self, record: SourceRecord) -> CompletionRequest | Rejection:
        """Validation (`stages/validate.py`), then authentication: what the handler acts on."""
        checked = validate_request(record.value, max_bytes=self._settings.max_message_bytes,
                                   reply_topic_allowed=self.reply_rule(record))
        return self.admit(record, checked)

    def reply_rule(self, record: SourceRecord) -> Callable[[str, str | None], bool]:
        """The reply-topic predicate validation applies: in topic mode, the topic's tenant's rules,
        and never a tenant's request topic (a reply there would be read as a request)."""
        allowed = self._settings.reply_topic_allowed
        topics = self.auth.topics
        if topics is None:
            return allowed
        tenant = topics.tenant_of(record.topic)
        return lambda topic, _claimed: topics.tenant_of(topic) is None and allowed(topic, tenant)

    def admit(self, record: SourceRecord, checked: CompletionRequest | Rejection) -> CompletionRequest | Rejection:
        """The request, acting for its authenticated tenant (filled in from the topic when it names
        none), or the rejection to send instead."""
        if self.auth.mode == "field":
            return checked
        if isinstance(checked, Rejection):
            refused = self.auth.unreadable(topic=record.topic, headers=record.headers)
            if refused is not None:
                return self._refuse(checked.request_id, refused)
            # Topic mode: the topic's ACL vouched for the writer; signature mode: nobody did yet.
            return checked if self.auth.mode == "topic" else dataclasses.replace(checked, reply_to=None)
        claimed = checked.tenant if "tenant" in checked.model_fields_set else None
        decision = self.auth.decide(topic=record.topic, key=record.key, value=record.value or b"",
                                    headers=record.headers, claimed=claimed)
        if isinstance(decision, Refused):
            return self._refuse(checked.request_id, decision)
        if decision.tenant != checked.tenant:
            return checked.model_copy(update={"tenant": decision.tenant})
        return checked

    @staticmethod
    def _refuse(request_id: str | None, refused: Refused) -> Rejection:
        return Rejection(ErrorCode.UNAUTHENTICATED, refused.detail, dead_letter=True, request_id=request_id,
                         reply_to=None)
