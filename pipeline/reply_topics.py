"""Which topics a request may direct its reply to (pure): per-tenant patterns with a separator boundary.

`PIPELINE_ALLOWED_REPLY_TOPICS` is a comma-separated list of patterns. Each pattern is a topic
name in which two placeholders are substituted first:

- `{replies}`: the worker's default reply topic (`PIPELINE_TOPIC_REPLIES`, e.g. `llm.replies`);
- `{tenant}`: the request's tenant, only when it is one topic segment (`[A-Za-z0-9_-]+`, no dot):
  a tenant like `a.b` could otherwise reach tenant `a`'s sub-topics, so for such a tenant (or an
  unknown one) a pattern with `{tenant}` matches nothing.

Then, with `P` the pattern without its wildcard:

- `P` (no `*`) matches the topic `P` exactly;
- `P.*` matches every sub-topic of `P` (`P.x`, `P.x.y`), never `P` itself;
- `P*` matches `P` and every sub-topic of `P`, and nothing else: a trailing `*` never matches
  across a missing separator (`llm.replies*` matches `llm.replies` and `llm.replies.a`, never
  `llm.repliesX`).

`*` anywhere but at the end, and characters a topic name cannot hold, make the pattern invalid.

Whatever the patterns say, a reply never goes to a topic the worker consumes or writes for its
own purposes (`own_topics`: requests, usage, usage DLQ, dead letters, alerts; `own_patterns`: the
per-tenant request topics, `{tenant}` standing for any one segment). The default reply topic is
always allowed: it is where the reply goes when `reply_to` is unset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

TENANT = "{tenant}"
REPLIES = "{replies}"

#: A tenant that may name reply topics: exactly one topic segment.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
#: What a pattern may hold once its placeholders and trailing `*` are set aside.
_LITERAL = re.compile(r"[A-Za-z0-9._-]*")


def tenant_segment(tenant: str | None) -> str | None:
    """`tenant` when it can stand for one topic segment; None when it cannot name reply topics."""
    return tenant if tenant is not None and _SEGMENT.fullmatch(tenant) else None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid reply-topic pattern; None when it is."""
    body = pattern.removesuffix("*")
    literal = body.replace(TENANT, "").replace(REPLIES, "")
    if "*" in literal:
        return f"{pattern!r}: '*' is allowed only at the end"
    if not literal and not body:
        return f"{pattern!r}: a pattern must name a topic"
    if not _LITERAL.fullmatch(literal):
        return f"{pattern!r}: a topic name holds only ASCII letters, digits, '.', '_' and '-'"
    return None


def parse_patterns(patterns: str) -> tuple[str, ...]:
    """The comma-separated patterns, stripped; ValueError naming the first invalid one."""
    parsed = tuple(p.strip() for p in patterns.split(",") if p.strip())
    for pattern in parsed:
        problem = pattern_problem(pattern)
        if problem is not None:
            raise ValueError(f"invalid reply topic pattern {problem}")
    return parsed


def pattern_matches(pattern: str, topic: str, *, tenant: str | None, replies: str) -> bool:
    """Whether `topic` matches `pattern` for a request of `tenant` (rules in the module docstring)."""
    if TENANT in pattern:
        segment = tenant_segment(tenant)
        if segment is None:
            return False
        pattern = pattern.replace(TENANT, segment)
    pattern = pattern.replace(REPLIES, replies)
    if pattern.endswith(".*"):
        prefix = pattern[:-1]  # keeps the dot: the separator is required
        return topic.startswith(prefix) and len(topic) > len(prefix)
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return topic == prefix or (topic.startswith(prefix + ".") and len(topic) > len(prefix) + 1)
    return topic == pattern


def matches_for_any_tenant(pattern: str, topic: str) -> bool:
    """Whether `topic` is `pattern` (exact) with `{tenant}` standing for any one topic segment."""
    parts = [re.escape(part) for part in pattern.split(TENANT)]
    return re.fullmatch(_SEGMENT.pattern.join(parts), topic) is not None


@dataclass(frozen=True, slots=True)
class ReplyTopicPolicy:
    """The reply topics a request of a tenant may name."""

    patterns: tuple[str, ...]
    default_topic: str
    own_topics: frozenset[str]
    own_patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: str, default_topic: str, own_topics: Iterable[str],
           own_patterns: Iterable[str] = ()) -> ReplyTopicPolicy:
        return _policy(patterns, default_topic, frozenset(t for t in own_topics if t),
                       tuple(p for p in own_patterns if p))

    def is_own(self, topic: str) -> bool:
        """A topic the worker consumes or writes for its own purposes: never a reply topic."""
        return topic in self.own_topics or any(matches_for_any_tenant(p, topic) for p in self.own_patterns)

    def refusal(self, topic: str, tenant: str | None) -> str | None:
        """Why a request of `tenant` may not direct its reply to `topic`; None when it may."""
        if self.is_own(topic):
            return f"reply_to {topic!r} is one of the worker's own topics"
        if topic == self.default_topic:
            return None
        if any(pattern_matches(p, topic, tenant=tenant, replies=self.default_topic) for p in self.patterns):
            return None
        who = f"tenant {tenant!r}" if tenant is not None else "a request without a valid tenant"
        return f"reply_to {topic!r} is not an allowed reply topic for {who}"

    def allows(self, topic: str, tenant: str | None) -> bool:
        return self.refusal(topic, tenant) is None


@lru_cache(maxsize=64)
def _policy(patterns: str, default_topic: str, own_topics: frozenset[str],
            own_patterns: tuple[str, ...]) -> ReplyTopicPolicy:
    return ReplyTopicPolicy(parse_patterns(patterns), default_topic, own_topics, own_patterns)
