"""Authenticate stage: which tenant a record may act for (pure; keys come from a callable).

`PIPELINE_TENANT_AUTH` names the source of truth (docs/security.md, Tenant authentication):

- `field` (the default): the request's `tenant` field, as written. For one trusted team only:
  whoever can write the requests topic can spend any tenant's budget.
- `signature`: the `tenant` field (`default` when absent), authenticated by an HMAC-SHA256 with
  that tenant's key in the `x-pipeline-signature` record header: `v1=<64 lowercase hex>` over

      b"v1:" + len(key).to_bytes(4, "big") + key + value

  where `key` is the record key (empty when the record has none) and `value` the record value,
  byte for byte as published. The key is length-prefixed so no byte moves between key and value
  unnoticed; the tenant is inside the value, so it is signed too.
- `topic`: the tenant is the `{tenant}` segment of the request topic (`TenantTopics`); Kafka ACLs
  decide who may write each topic. A `tenant` field that disagrees is refused; one that is
  absent is filled from the topic.

A refusal says why (for the dead letter and the error reply); the caller makes it an
`unauthenticated` rejection, before any idempotency claim, budget or provider work.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.contracts.models import DEFAULT_TENANT

Mode = Literal["field", "signature", "topic"]
SIGNATURE_HEADER = "x-pipeline-signature"
SIGNATURE_VERSION = "v1"
#: A tenant's accepted keys (several while a key is being rotated), or None: no such tenant.
KeyLookup = Callable[[str], Sequence[bytes] | None]

#: A tenant that can name a key file: no path separator, no leading dot (no `..`, no hidden file).
_KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,252}")
#: A tenant that can stand for one topic segment (the same rule as per-tenant reply topics).
_SEGMENT = "[A-Za-z0-9_-]+"
_TOPIC_TEXT = re.compile(r"[A-Za-z0-9._-]*")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
PLACEHOLDER = "{tenant}"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The record may act for `tenant`."""

    tenant: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The record may not act for anyone: why."""

    detail: str


Decision = Authenticated | Refused


# -- signature ---------------------------------------------------------------------------
def signed_bytes(key: bytes | None, value: bytes) -> bytes:
    """Exactly the bytes a v1 signature covers (see the module docstring)."""
    k = key or b""
    return b"v1:" + len(k).to_bytes(4, "big") + k + value


def sign(secret: bytes, key: bytes | None, value: bytes) -> str:
    """The `x-pipeline-signature` header value of a record signed with `secret`."""
    return f"{SIGNATURE_VERSION}={hmac.new(secret, signed_bytes(key, value), hashlib.sha256).hexdigest()}"


def key_name_problem(tenant: str) -> str | None:
    """Why `tenant` cannot name a key file (None when it can)."""
    if _KEY_NAME.fullmatch(tenant):
        return None
    return f"tenant {tenant[:80]!r} cannot name a key (letters, digits, '_', '-', '.'; no leading dot)"


def _digest(header: bytes | None) -> bytes | Refused:
    if header is None:
        return Refused(f"the record is not signed (no {SIGNATURE_HEADER} header)")
    text = header.decode("ascii", errors="replace").strip()
    version, _, digest = text.partition("=")
    if version != SIGNATURE_VERSION:
        return Refused(f"unsupported {SIGNATURE_HEADER} (expected {SIGNATURE_VERSION}=<hex>)")
    if not _HEX_DIGEST.fullmatch(digest):
        return Refused(f"malformed {SIGNATURE_HEADER} (expected 64 hex digits after {SIGNATURE_VERSION}=)")
    return bytes.fromhex(digest)


def signature_problem(headers: Mapping[str, bytes]) -> str | None:
    """Why the record's signature header is missing or malformed (None: it is well-formed)."""
    found = _digest(headers.get(SIGNATURE_HEADER))
    return found.detail if isinstance(found, Refused) else None


def verify_signature(tenant: str, key: bytes | None, value: bytes, headers: Mapping[str, bytes],
                     keys: KeyLookup) -> Decision:
    """Authenticated when the header holds an HMAC of the record by one of `tenant`'s keys."""
    found = _digest(headers.get(SIGNATURE_HEADER))
    if isinstance(found, Refused):
        return found
    if (problem := key_name_problem(tenant)) is not None:
        return Refused(problem)
    secrets = keys(tenant)
    if not secrets:
        return Refused(f"no signing key is configured for tenant {tenant!r}")
    message = signed_bytes(key, value)
    matched = False
    for secret in secrets:  # every key is tried: the time taken does not say which one matched
        matched |= hmac.compare_digest(hmac.new(secret, message, hashlib.sha256).digest(), found)
    return Authenticated(tenant) if matched else Refused(f"the signature does not match tenant {tenant!r}'s key")


# -- topic -------------------------------------------------------------------------------
class TenantTopics:
    """Per-tenant request topics: `llm.requests.tenant.{tenant}` -> `llm.requests.tenant.acme`."""

    def __init__(self, pattern: str) -> None:
        prefix, placeholder, suffix = pattern.partition(PLACEHOLDER)
        if not placeholder or PLACEHOLDER in suffix:
            raise ValueError(f"the tenant topic pattern {pattern!r} must hold {PLACEHOLDER} exactly once")
        if not (_TOPIC_TEXT.fullmatch(prefix) and _TOPIC_TEXT.fullmatch(suffix)) or not (prefix or suffix):
            raise ValueError(f"the tenant topic pattern {pattern!r} may only hold topic characters "
                             f"(letters, digits, '.', '_', '-') around {PLACEHOLDER}")
        self.pattern = pattern
        self._prefix, self._suffix = prefix, suffix
        #: The regular expression a consumer subscribes with (aiokafka matches from the start).
        self.subscription = f"^{re.escape(prefix)}({_SEGMENT}){re.escape(suffix)}\\Z"
        self._regex = re.compile(self.subscription)

    def tenant_of(self, topic: str) -> str | None:
        """The tenant a topic belongs to, or None when the topic is not a tenant topic."""
        found = self._regex.match(topic)
        return found.group(1) if found else None

    def topic_for(self, tenant: str) -> str:
        topic = f"{self._prefix}{tenant}{self._suffix}"
        if self.tenant_of(topic) != tenant:
            raise ValueError(f"tenant {tenant!r} cannot have a request topic (one segment: letters, digits, '_', '-')")
        return topic

    def clashes(self, own_topics: Iterable[str]) -> list[str]:
        """The worker's own topics (dead letters, replies, ...) the pattern would read as tenants."""
        return sorted({t for t in own_topics if self.tenant_of(t) is not None})

    def check_own_topics(self, own_topics: Iterable[str]) -> None:
        """Refuse (ValueError) a pattern under which one of the worker's own topics looks like a tenant's."""
        clashes = self.clashes(own_topics)
        if clashes:
            raise ValueError(
                f"PIPELINE_TENANT_TOPIC_PATTERN={self.pattern!r} matches the worker's own topic(s) {clashes}: "
                f"they would be read as tenants {[self.tenant_of(t) for t in clashes]}; choose a pattern or "
                "topic names that do not overlap"
            )

    def verify(self, topic: str, claimed: str | None) -> Decision:
        tenant = self.tenant_of(topic)
        if tenant is None:
            return Refused(f"topic {topic!r} is not a tenant request topic ({self.pattern})")
        if claimed is not None and claimed != tenant:
            return Refused(f"the request names tenant {claimed[:80]!r} but was published to tenant {tenant!r}'s "
                           f"topic {topic!r}")
        return Authenticated(tenant)


# -- the decision ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TenantAuthenticator:
    """One mode's decision for a record whose request names `claimed` (None: no tenant field)."""

    mode: Mode = "field"
    keys: KeyLookup | None = None
    topics: TenantTopics | None = None

    def __post_init__(self) -> None:
        if self.mode == "signature" and self.keys is None:
            raise ValueError("signature mode needs a key lookup (PIPELINE_TENANT_KEYS_DIR)")
        if self.mode == "topic" and self.topics is None:
            raise ValueError("topic mode needs a tenant topic pattern (PIPELINE_TENANT_TOPIC_PATTERN)")

    def decide(self, *, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, bytes],
               claimed: str | None) -> Decision:
        if self.mode == "signature":
            assert self.keys is not None
            return verify_signature(claimed or DEFAULT_TENANT, key, value, headers, self.keys)
        if self.mode == "topic":
            assert self.topics is not None
            return self.topics.verify(topic, claimed)
        return Authenticated(claimed or DEFAULT_TENANT)

    def unreadable(self, *, topic: str, headers: Mapping[str, bytes]) -> Refused | None:
        """For a record that failed validation (so names no tenant): a refusal when it cannot
        be authentic at all (unsigned; not on a tenant topic), else None."""
        if self.mode == "signature":
            problem = signature_problem(headers)
            return Refused(problem) if problem else None
        if self.mode == "topic":
            assert self.topics is not None
            decision = self.topics.verify(topic, None)
            return decision if isinstance(decision, Refused) else None
        return None
