"""Tenant authentication: the pure decision (stages/authenticate.py), the key directory, and the
handler's gate (in-memory publisher and mock provider: no broker)."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import orjson
import pytest

from pipeline.catalog import load_catalog
from pipeline.contracts.models import CompletionReply, ErrorCode
from pipeline.settings import Settings
from pipeline.stages.authenticate import (
    SIGNATURE_HEADER,
    Authenticated,
    Refused,
    TenantAuthenticator,
    TenantTopics,
    sign,
    signed_bytes,
    verify_signature,
)
from pipeline.state.processed import InProcessStore
from pipeline.transport.provider import MockProvider, ProviderResponse
from pipeline.transport.records import MemoryPublisher, SourceRecord
from pipeline.worker.handler import RequestHandler
from pipeline.worker.tenant_auth import TenantKeyDirectory, request_subscription, tenant_topics

KEYS = {"acme": [b"acme-secret"], "globex": [b"globex-secret"]}
VALUE = orjson.dumps({"request_id": "r1", "tenant": "acme", "task_type": "summarize",
                      "messages": [{"role": "user", "content": "x"}]})


def lookup(tenant: str):
    return KEYS.get(tenant)


def signed(secret: bytes = b"acme-secret", key: bytes | None = b"k1", value: bytes = VALUE) -> dict[str, bytes]:
    return {SIGNATURE_HEADER: sign(secret, key, value).encode()}


# -- the signature ---------------------------------------------------------------------
def test_the_signed_bytes_are_the_documented_recipe() -> None:
    assert signed_bytes(b"k1", b"{}") == b"v1:\x00\x00\x00\x02k1{}"
    assert signed_bytes(None, b"{}") == signed_bytes(b"", b"{}") == b"v1:\x00\x00\x00\x00{}"
    expected = hmac.new(b"s", b"v1:\x00\x00\x00\x02k1{}", hashlib.sha256).hexdigest()
    assert sign(b"s", b"k1", b"{}") == f"v1={expected}"


def test_a_good_signature_authenticates_the_tenant() -> None:
    assert verify_signature("acme", b"k1", VALUE, signed(), lookup) == Authenticated("acme")
    upper = {SIGNATURE_HEADER: sign(b"acme-secret", b"k1", VALUE).upper().replace("V1=", "v1=").encode()}
    assert verify_signature("acme", b"k1", VALUE, upper, lookup) == Authenticated("acme")


@pytest.mark.parametrize("tenant, key, value, headers, why", [
    ("acme", b"k1", VALUE.replace(b"x", b"y"), signed(), "does not match"),          # tampered value
    ("acme", b"k2", VALUE, signed(), "does not match"),                             # tampered key
    ("acme", b"k", b"1" + VALUE, signed(key=b"k1", value=VALUE), "does not match"),  # a byte moved key -> value
    ("acme", b"k1", VALUE, signed(b"globex-secret"), "does not match"),            # another tenant's key
    ("acme", b"k1", VALUE, {}, "not signed"),                                       # no header
    ("acme", b"k1", VALUE, {SIGNATURE_HEADER: b"v2=" + b"0" * 64}, "unsupported"),   # unknown version
    ("acme", b"k1", VALUE, {SIGNATURE_HEADER: b"v1=zz"}, "malformed"),
    ("initech", b"k1", VALUE, signed(), "no signing key"),                          # unknown tenant
    ("../acme", b"k1", VALUE, signed(), "cannot name a key"),                       # a path, not a tenant
])
def test_what_a_signature_does_not_authenticate(tenant, key, value, headers, why) -> None:
    decision = verify_signature(tenant, key, value, headers, lookup)
    assert isinstance(decision, Refused) and why in decision.detail


def test_any_of_a_tenants_keys_authenticates_during_a_rotation() -> None:
    keys = {"acme": [b"old", b"new"]}.get
    assert verify_signature("acme", b"k1", VALUE, signed(b"old"), keys) == Authenticated("acme")
    assert verify_signature("acme", b"k1", VALUE, signed(b"new"), keys) == Authenticated("acme")


def test_signature_mode_defaults_a_missing_tenant_field() -> None:
    auth = TenantAuthenticator("signature", keys={"default": [b"d"]}.get)
    decision = auth.decide(topic="llm.requests", key=None, value=b"{}", headers={SIGNATURE_HEADER: sign(
        b"d", None, b"{}").encode()}, claimed=None)
    assert decision == Authenticated("default")


def test_field_mode_trusts_the_field() -> None:
    auth = TenantAuthenticator()
    assert auth.decide(topic="t", key=None, value=b"", headers={}, claimed="acme") == Authenticated("acme")
    assert auth.decide(topic="t", key=None, value=b"", headers={}, claimed=None) == Authenticated("default")
    with pytest.raises(ValueError, match="key lookup"):
        TenantAuthenticator("signature")


# -- the key directory -----------------------------------------------------------------
def test_key_files_are_read_at_verification_time_so_rotation_needs_no_restart(tmp_path: Path) -> None:
    now = [0.0]
    keys = TenantKeyDirectory(tmp_path, ttl_s=5.0, clock=lambda: now[0])
    assert keys("acme") is None  # no file: unknown tenant
    (tmp_path / "acme").write_text("first\n")
    assert keys("acme") is None  # the cached answer, for the TTL at most
    now[0] = 5.0
    assert keys("acme") == (b"first",)
    (tmp_path / "acme").write_text("second\n\n  third  \n")  # rotated: both keys accepted
    now[0] = 10.0
    assert keys("acme") == (b"second", b"third")
    assert verify_signature("acme", b"k1", VALUE, signed(b"first"), keys) == Refused(
        "the signature does not match tenant 'acme''s key")
    (tmp_path / "acme").unlink()
    now[0] = 15.0
    assert keys("acme") is None
    (tmp_path / "secret").mkdir()
    assert keys("../secret") is None and keys(".hidden") is None and keys("secret") is None  # a directory


# -- topics ------------------------------------------------------------------------------
def test_the_tenant_is_the_topic_segment() -> None:
    topics = TenantTopics("llm.requests.{tenant}")
    assert topics.tenant_of("llm.requests.acme") == "acme"
    assert topics.tenant_of("llm.requests.acme.x") is None  # one segment, never across a dot
    assert topics.tenant_of("llm.requestsXacme") is None and topics.tenant_of("llm.requests.") is None
    assert topics.topic_for("acme") == "llm.requests.acme"
    with pytest.raises(ValueError):
        topics.topic_for("a.b")
    assert topics.verify("llm.requests.acme", None) == Authenticated("acme")  # filled from the topic
    assert topics.verify("llm.requests.acme", "acme") == Authenticated("acme")
    refused = topics.verify("llm.requests.acme", "globex")
    assert isinstance(refused, Refused) and "globex" in refused.detail
    assert isinstance(topics.verify("llm.requests", "acme"), Refused)


@pytest.mark.parametrize("pattern", ["llm.requests", "llm.{tenant}.{tenant}", "llm requests.{tenant}", "{tenant}"])
def test_invalid_topic_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        TenantTopics(pattern)


def test_a_pattern_that_would_read_the_dead_letter_topic_as_a_tenant_refuses_to_start() -> None:
    settings = Settings(tenant_auth="topic", tenant_topic_pattern="llm.requests.{tenant}")  # dlq: llm.requests.dlq
    with pytest.raises(ValueError, match=r"llm\.requests\.dlq"):
        tenant_topics(settings)
    subscription = request_subscription(Settings(tenant_auth="topic"))
    assert subscription is not None and re.match(subscription, "llm.requests.tenant.acme")
    assert request_subscription(Settings()) is None


# -- the handler's gate ------------------------------------------------------------------
CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")


def handler(tmp_path: Path, **overrides) -> tuple[RequestHandler, MemoryPublisher, MockProvider, InProcessStore]:
    (tmp_path / "acme").write_text("acme-secret")
    settings = Settings(**{"topic_replies": "replies", "topic_usage": "usage", "topic_dlq": "dlq",
                           "tenant_keys_dir": tmp_path, "tenant_auth": "signature", **overrides})
    publisher, store = MemoryPublisher(), InProcessStore()
    provider = MockProvider(lambda call: ProviderResponse("fine", 5, 5))
    return RequestHandler(settings, lambda: CATALOG, provider, publisher, store), publisher, provider, store


def doc(**extra) -> bytes:
    return orjson.dumps({"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}],
                         **extra})


async def test_a_signed_request_is_served(tmp_path: Path) -> None:
    h, publisher, provider, _ = handler(tmp_path)
    value = doc(tenant="acme")
    await h.handle(SourceRecord("requests", 0, 0, value, b"k", headers=signed(b"acme-secret", b"k", value)))
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.status == "ok" and len(provider.calls) == 1


@pytest.mark.parametrize("value, headers", [
    (doc(tenant="acme", reply_to="replies.acme"), {}),                                     # unsigned
    (doc(tenant="acme"), signed(b"wrong", b"k", doc(tenant="acme"))),                      # wrong key
    (doc(tenant="initech"), signed(b"acme-secret", b"k", doc(tenant="initech"))),          # unknown tenant
    (b"{not json", {}),                                                                    # unsigned garbage
])
async def test_unauthenticated_records_are_dead_lettered_and_answered_on_the_default_topic(
    tmp_path: Path, value: bytes, headers: dict[str, bytes]
) -> None:
    h, publisher, provider, store = handler(tmp_path)
    await h.handle(SourceRecord("requests", 0, 0, value, b"k", headers=headers))
    assert provider.calls == []
    (_, dead, _, dlq_headers), = publisher.on("dlq")
    assert dead == value and dlq_headers["dlq_reason"] == ErrorCode.UNAUTHENTICATED
    assert {r[0] for r in publisher.records} <= {"dlq", "replies"}  # never the request's own reply_to
    if value.startswith(b"{\""):
        (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
        assert reply.error is not None and reply.error.code == ErrorCode.UNAUTHENTICATED
    assert len(store) == 0  # no idempotency claim


async def test_topic_mode_fills_the_tenant_and_refuses_a_disagreeing_one(tmp_path: Path) -> None:
    h, publisher, provider, _ = handler(tmp_path, tenant_auth="topic", tenant_topic_pattern="req.{tenant}")
    await h.handle(SourceRecord("req.acme", 0, 0, doc(), b"k"))
    usage = [orjson.loads(r[1]) for r in publisher.on("usage")]
    assert [u["tenant"] for u in usage] == ["acme"] and len(provider.calls) == 1
    await h.handle(SourceRecord("req.acme", 0, 1, doc(tenant="globex", request_id="r2"), b"k"))
    (_, _, _, dlq_headers), = publisher.on("dlq")
    assert dlq_headers["dlq_reason"] == "unauthenticated" and "globex" in dlq_headers["dlq_detail"]
    assert len(provider.calls) == 1


async def test_topic_mode_never_replies_into_a_tenant_request_topic(tmp_path: Path) -> None:
    h, publisher, _, _ = handler(tmp_path, tenant_auth="topic", tenant_topic_pattern="replies.{tenant}",
                                 allowed_reply_topics="{replies}.*")
    await h.handle(SourceRecord("replies.acme", 0, 0, doc(reply_to="replies.globex"), b"k"))
    assert [r[0] for r in publisher.records if r[0].startswith("replies.")] == []
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.error is not None and reply.error.code == ErrorCode.REPLY_TOPIC_NOT_ALLOWED


def test_signature_mode_without_a_key_directory_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="PIPELINE_TENANT_KEYS_DIR"):
        RequestHandler(Settings(tenant_auth="signature"), lambda: CATALOG, MockProvider(lambda c: None),
                       MemoryPublisher())
