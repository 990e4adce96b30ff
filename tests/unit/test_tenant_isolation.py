"""Nothing is shared across tenants: idempotency keys, reply-topic patterns, the response cache (pure parts)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.catalog import load_catalog
from pipeline.contracts.models import CompletionReply, CompletionRequest, ErrorCode
from pipeline.reply_topics import ReplyTopicPolicy, parse_patterns, pattern_matches, tenant_segment
from pipeline.settings import Settings
from pipeline.stages.budget import BudgetRefusal, Reservation
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import Candidate, RoutePlan, plan_route
from pipeline.stages.validate import Rejection, validate_request
from pipeline.state import RequestKey
from pipeline.state.budget import BudgetLine
from pipeline.state.response_cache import InProcessResponseCache
from pipeline.transport.provider import MockProvider, ProviderResponse
from pipeline.transport.records import MemoryPublisher, SourceRecord
from pipeline.worker.answer_cache import CachedAnswers
from pipeline.worker.handler import RequestHandler
from pipeline.worker.outputs import Outputs

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")
OWN = {"llm.requests", "llm.usage", "llm.usage.dlq", "llm.requests.dlq", "llm.alerts"}


# -- RequestKey ---------------------------------------------------------------------------
def test_request_key_encoding_is_unambiguous() -> None:
    assert RequestKey("a:b", "c").encoded != RequestKey("a", "b:c").encoded
    assert RequestKey("a%3Ab", "c").encoded != RequestKey("a:b", "c").encoded  # the escape itself is escaped
    for key in (RequestKey("a:b", "c"), RequestKey("a", "b:c"), RequestKey("ü %", ":x:"), RequestKey("t", "r")):
        assert RequestKey.decode(key.encoded) == key
    assert RequestKey("acme", "order-1").encoded == "acme:order-1"  # readable in Redis


def test_request_key_default_namespace_and_checks() -> None:
    assert RequestKey.of("r1") == RequestKey.of("r1", None) == RequestKey("default", "r1")
    assert RequestKey.of("r1", "acme") != RequestKey.of("r1")
    request = CompletionRequest.model_validate({"request_id": "r1", "task_type": "t",
                                                "messages": [{"role": "user", "content": "x"}]})
    assert request.tenant == "default"  # what a missing tenant means in the contract
    with pytest.raises(ValueError):
        RequestKey("", "r1")
    with pytest.raises(ValueError):
        RequestKey("acme", "")
    with pytest.raises(ValueError):
        RequestKey.decode("no-separator")


# -- reply topic patterns ---------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "topic", "tenant", "expected"), [
    ("llm.replies*", "llm.replies", "t", True),
    ("llm.replies*", "llm.replies.a", "t", True),
    ("llm.replies*", "llm.replies.a.b", "t", True),
    ("llm.replies*", "llm.repliesX", "t", False),  # a trailing * needs the separator
    ("llm.replies*", "llm.replies.", "t", False),
    ("llm.replies.*", "llm.replies", "t", False),  # .* is sub-topics only
    ("llm.replies.*", "llm.replies.a", "t", True),
    ("llm.replies", "llm.replies", "t", True),
    ("llm.replies", "llm.replies.a", "t", False),  # no * : exact
    ("llm.replies.{tenant}", "llm.replies.alpha", "alpha", True),
    ("llm.replies.{tenant}", "llm.replies.alpha", "beta", False),
    ("llm.replies.{tenant}", "llm.replies.alpha.x", "alpha", False),
    ("llm.replies.{tenant}.*", "llm.replies.alpha.x", "alpha", True),
    ("llm.replies.{tenant}.*", "llm.replies.alpha.x.y", "alpha", True),
    ("llm.replies.{tenant}.*", "llm.replies.alpha", "alpha", False),
    ("llm.replies.{tenant}.*", "llm.replies.alphax.y", "alpha", False),
    ("llm.replies.{tenant}*", "llm.replies.alpha-2", "alpha", False),
    ("llm.replies.{tenant}.*", "llm.replies.a.b.x", "a.b", False),  # a dotted tenant names no topics
    ("llm.replies.{tenant}.*", "llm.replies.a.b.x", "a", True),
    ("llm.replies.{tenant}", "llm.replies.*", "*", False),
    ("llm.replies.{tenant}", "llm.replies.None", None, False),  # unknown tenant
    ("{replies}.{tenant}", "llm.replies.alpha", "alpha", True),
])
def test_pattern_matching(pattern: str, topic: str, tenant: str | None, expected: bool) -> None:
    assert pattern_matches(pattern, topic, tenant=tenant, replies="llm.replies") is expected


def test_tenant_segments_and_invalid_patterns() -> None:
    assert tenant_segment("acme_1-x") == "acme_1-x"
    assert [tenant_segment(t) for t in ("a.b", "a b", "", "a*", "ü", None)] == [None] * 6
    assert parse_patterns(" a.b* , {replies}.{tenant}.* ,, ") == ("a.b*", "{replies}.{tenant}.*")
    for bad in ("llm.*.x", "*", "llm.replies?", "llm replies", "a,{tenant}*b"):
        with pytest.raises(ValueError, match="invalid reply topic pattern"):
            parse_patterns(bad)
    with pytest.raises(ValueError, match="invalid reply topic pattern"):
        Settings(allowed_reply_topics="llm.*.x")


def test_own_topics_are_refused_whatever_the_patterns_say() -> None:
    policy = ReplyTopicPolicy.of("llm.*, llm.replies*, llm.replies.{tenant}*", "llm.replies", OWN)
    for topic in OWN:
        assert not policy.allows(topic, "alpha")
        assert "own topics" in (policy.refusal(topic, "alpha") or "")
    assert policy.allows("llm.replies", "alpha") and policy.allows("llm.anything", "alpha")
    # The worker's own usage topic named under the reply prefix:
    settings = Settings(topic_usage="llm.replies.usage", allowed_reply_topics="llm.replies*")
    assert not settings.reply_topic_allowed("llm.replies.usage", "alpha")
    assert settings.reply_topic_allowed("llm.replies.other", "alpha")
    # The per-tenant request topics are the worker's too, for every tenant:
    loose = Settings(allowed_reply_topics="llm.*", tenant_topic_pattern="llm.requests.tenant.{tenant}")
    assert not loose.reply_topic_allowed("llm.requests.tenant.beta", "alpha")
    assert not loose.reply_topic_allowed("llm.requests.tenant.alpha", "alpha")
    assert loose.reply_topic_allowed("llm.requests.tenant.a.b", "alpha")  # no tenant's topic: one segment only


def test_the_default_patterns_keep_each_tenant_to_its_own_reply_topics() -> None:
    s = Settings(topic_replies="llm.replies.dep1")
    assert s.reply_topic_allowed("llm.replies.dep1", "alpha")  # the default reply topic: where it goes anyway
    assert s.reply_topic_allowed("llm.replies.dep1.alpha", "alpha")
    assert s.reply_topic_allowed("llm.replies.dep1.alpha.billing-1", "alpha")
    assert not s.reply_topic_allowed("llm.replies.dep1.beta", "alpha")
    assert not s.reply_topic_allowed("llm.replies.dep1.beta.billing-1", "alpha")
    assert not s.reply_topic_allowed("llm.replies", "alpha")  # another deployment's default
    assert not s.reply_topic_allowed("llm.replies.dep1X", "alpha")
    assert s.reply_topic_allowed("llm.replies.dep1.default.mine")  # no tenant: the default one


# -- validation and the handler -----------------------------------------------------------
def _doc(**kw: object) -> bytes:
    return orjson.dumps({"request_id": "r1", "task_type": "summarize",
                         "messages": [{"role": "user", "content": "hi"}], **kw})


SETTINGS = Settings(topic_replies="replies", topic_usage="usage", topic_dlq="dlq", topic_requests="requests",
                    topic_alerts="alerts", topic_usage_dlq="usage.dlq")


def _check(raw: bytes) -> CompletionRequest | Rejection:
    return validate_request(raw, max_bytes=10**6, reply_topic_allowed=SETTINGS.reply_topic_allowed)


def test_validation_applies_the_tenant_patterns() -> None:
    ok = _check(_doc(tenant="alpha", reply_to="replies.alpha.svc"))
    assert isinstance(ok, CompletionRequest)
    refused = _check(_doc(tenant="beta", reply_to="replies.alpha.svc"))
    assert isinstance(refused, Rejection) and refused.code is ErrorCode.REPLY_TOPIC_NOT_ALLOWED
    assert refused.dead_letter and refused.reply_to is None and "tenant 'beta'" in refused.detail
    own = _check(_doc(tenant="alpha", reply_to="usage"))
    assert isinstance(own, Rejection) and own.code is ErrorCode.REPLY_TOPIC_NOT_ALLOWED


def test_salvaged_error_replies_obey_the_tenant_patterns() -> None:
    bad = {"messages": [], "reply_to": "replies.alpha"}  # schema-invalid: the error reply is salvaged
    mine = _check(_doc(tenant="alpha", **bad))
    theirs = _check(_doc(tenant="beta", **bad))
    nameless = _check(_doc(tenant=7, **bad))  # a tenant we cannot read names no reply topics
    assert isinstance(mine, Rejection) and mine.reply_to == "replies.alpha"
    assert isinstance(theirs, Rejection) and theirs.reply_to is None
    assert isinstance(nameless, Rejection) and nameless.reply_to is None
    unparsable = _check(b'{"request_id":"r1","tenant":"beta","reply_to":"replies.alpha","n":1e999}')
    assert isinstance(unparsable, Rejection) and unparsable.code is ErrorCode.INVALID_JSON
    assert unparsable.request_id == "r1" and unparsable.reply_to is None
    default = _check(_doc(messages=[], reply_to="replies.default.x"))
    assert isinstance(default, Rejection) and default.reply_to == "replies.default.x"


def test_outputs_never_reply_into_the_workers_own_topics() -> None:
    out = Outputs(SETTINGS, MemoryPublisher())
    record = SourceRecord(topic="requests", partition=0, offset=0, value=b"")
    for own in ("requests", "usage", "usage.dlq", "dlq", "alerts"):
        assert out.reply_target(record, own, "r1")[0] == "replies"
    assert out.reply_target(record, "replies.alpha", "r1")[0] == "replies.alpha"


async def test_same_request_id_from_two_tenants_is_two_requests() -> None:
    calls: list[str] = []

    def answer(call: object) -> ProviderResponse:
        calls.append("x")
        return ProviderResponse(f"answer {len(calls)}", 5, 5)

    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, MockProvider(answer), publisher)
    for offset, tenant in enumerate(("alpha", "beta", "alpha")):
        await handler.handle(SourceRecord(topic="requests", partition=0, offset=offset,
                                          value=_doc(request_id="order-1", tenant=tenant, metadata={"t": tenant})))
    replies = [CompletionReply.model_validate_json(v) for _, v, _, _ in publisher.on("replies")]
    assert len(calls) == 2  # alpha, beta; alpha's retry got its stored reply
    assert [(r.content, r.metadata) for r in replies] == [
        ("answer 1", {"t": "alpha"}), ("answer 2", {"t": "beta"}), ("answer 1", {"t": "alpha"})]


# -- response cache scope -----------------------------------------------------------------
class Spend:
    """A SpendControl that records what was settled, optionally refusing every reservation."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.settled: list[float] = []

    async def reserve(self, candidate: Candidate) -> Reservation | BudgetRefusal:
        if self.refuse:
            return BudgetRefusal(BudgetLine("tenant=beta:daily:x", "tenant beta daily", 1, 1), 1, 1)
        return Reservation((), 1)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        self.settled.append(actual_usd)


def _request(tenant: str, request_id: str = "r1") -> CompletionRequest:
    return CompletionRequest.model_validate({"request_id": request_id, "task_type": "summarize", "tenant": tenant,
                                             "messages": [{"role": "user", "content": "same question"}]})


async def _serve(cache: CachedAnswers, provider: MockProvider, req: CompletionRequest, spend: Spend | None = None):
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    return plan, await call_with_fallback(req, plan, CallContext(provider, 5.0, cache=cache, spend=spend))


async def test_tenant_scope_never_serves_another_tenants_answer() -> None:
    cache = CachedAnswers(InProcessResponseCache(), ttl_s=60)  # scope "tenant" by default
    provider = MockProvider(lambda call: ProviderResponse("computed", 100, 50))
    await _serve(cache, provider, _request("alpha"))
    _, beta = await _serve(cache, provider, _request("beta"))
    _, alpha_again = await _serve(cache, provider, _request("alpha", "r2"))
    assert len(provider.called) == 2 and not beta.attempts[0].cache_hit
    assert alpha_again.attempts[0].cache_hit and not alpha_again.attempts[0].shared_cache_hit
    assert alpha_again.attempts[0].cost_usd == 0


async def test_shared_scope_serves_another_tenant_and_books_the_cost() -> None:
    cache = CachedAnswers(InProcessResponseCache(), ttl_s=60, scope="shared")
    provider = MockProvider(lambda call: ProviderResponse("computed", 100, 50))
    _, first = await _serve(cache, provider, _request("alpha"))
    spend = Spend()
    plan, beta = await _serve(cache, provider, _request("beta"), spend)
    assert len(provider.called) == 1
    hit = beta.attempts[0]
    assert hit.cache_hit and hit.shared_cache_hit and hit.cost_usd == pytest.approx(first.attempts[0].cost_usd)
    assert hit.cost_usd > 0 and spend.settled == [hit.cost_usd]  # charged on the budgets like a call
    (event,) = usage_events(_request("beta"), plan, beta)
    assert event.cache_hit and event.shared_cache_hit and event.tenant == "beta" and event.cost_usd == hit.cost_usd
    assert build_reply(_request("beta"), plan, beta, 1.0).cost_usd == hit.cost_usd
    _, alpha_again = await _serve(cache, provider, _request("alpha", "r2"))  # its own answer: free
    assert alpha_again.attempts[0].cache_hit and not alpha_again.attempts[0].shared_cache_hit
    assert alpha_again.attempts[0].cost_usd == 0


async def test_a_shared_hit_the_budget_cannot_cover_is_a_miss() -> None:
    cache = CachedAnswers(InProcessResponseCache(), ttl_s=60, scope="shared")
    provider = MockProvider(lambda call: ProviderResponse("computed", 100, 50))
    await _serve(cache, provider, _request("alpha"))
    _, beta = await _serve(cache, provider, _request("beta"), Spend(refuse=True))
    assert len(provider.called) == 1 and not any(a.cache_hit for a in beta.attempts)
    assert beta.budget_refusal is not None
